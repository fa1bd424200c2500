"""In-flight coalescing: identical requests arriving while one is in flight share its upstream call.

The shared call runs in a task owned by its flight, not inside any one caller, so a caller that
goes away (a client disconnect cancels its handler) never strands the others: the call goes on
for whoever still waits and is cancelled only when nobody does. The "leader" (the caller billed
as first) is decided when the result lands: the earliest caller still waiting. A flight ends
when its call finishes; a request arriving after that starts a new call.

Only for non-streaming requests: a stream's bytes go to one client as they arrive. Coalescing is
per process; replicas do not coalesce with each other (the response cache covers that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Literal, NamedTuple, TypeVar

from gateway.errors import ServiceUnavailable

T = TypeVar("T")
CoalesceBilling = Literal["first", "split"]


class Shared(NamedTuple, Generic[T]):
    """What one caller of `Coalescer.run` gets: `(result, is_leader, group_size)`."""

    result: T
    is_leader: bool
    group_size: int  # callers that received this result, the leader included


class _Flight(Generic[T]):
    __slots__ = ("group_size", "leader", "task", "waiters")

    task: asyncio.Task[None]  # set by `Coalescer._start` as soon as the flight exists

    def __init__(self) -> None:
        # One future per caller still waiting, oldest first: the call sets each (a caller that
        # is cancelled cancels its own, never another's).
        self.waiters: list[asyncio.Future[T]] = []
        self.leader: asyncio.Future[T] | None = None
        self.group_size = 0

    def settle(self) -> None:
        """Fix who leads and how many share, once, when the first caller takes the result."""
        if self.group_size == 0:
            self.group_size = max(1, len(self.waiters))
            self.leader = self.waiters[0] if self.waiters else None


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        """Calls in flight right now."""
        return len(self._flights)

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> Shared[T]:
        """`factory()`'s result, shared with every caller of the same `key` meanwhile.

        Every caller gets the same result object (treat it as read-only) or the same
        exception. A caller whose own task is cancelled just stops waiting. If the shared call
        itself is cancelled (shutdown), callers get a retryable ServiceUnavailable.
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, factory)
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        flight.waiters.append(waiter)
        try:
            result = await waiter
        except asyncio.CancelledError:
            self._leave(flight, waiter)
            raise
        except BaseException:
            flight.settle()
            raise
        flight.settle()
        return Shared(result, flight.leader is waiter, flight.group_size)

    async def aclose(self) -> None:
        """Cancel every call in flight (their callers get ServiceUnavailable)."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, key: str, factory: Callable[[], Awaitable[T]]) -> _Flight[T]:
        flight: _Flight[T] = _Flight()

        async def call() -> None:
            # The call hands its outcome to each waiter itself: one turn of the loop from the
            # answer to its callers (a shield per caller would take two).
            try:
                result = await factory()
            except asyncio.CancelledError:
                _fail(flight.waiters, _cancelled())
                raise
            except BaseException as exc:
                _fail(flight.waiters, exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for waiter in flight.waiters:
                    if not waiter.done():
                        waiter.set_result(result)
            finally:
                self._land(key, flight)

        flight.task = asyncio.get_running_loop().create_task(call())
        self._flights[key] = flight
        return flight

    def _land(self, key: str, flight: _Flight[T]) -> None:
        """The call is over: a request arriving from now on starts a new one."""
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _leave(self, flight: _Flight[T], waiter: asyncio.Future[T]) -> None:
        if flight.group_size == 0 and waiter in flight.waiters:
            flight.waiters.remove(waiter)
        if not flight.task.done() and all(w.done() for w in flight.waiters):
            flight.task.cancel()  # nobody wants the answer any more


def _cancelled() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the identical request this one was sharing an upstream call with was cancelled; retry"
    )


def _fail(waiters: list[asyncio.Future[T]], exc: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(exc)


def coalesced_cost_nano(
    cost_nano: int, is_leader: bool, group_size: int, billing: CoalesceBilling
) -> int:
    """One caller's part of a shared call's cost. "first": the leader pays it all. "split":
    equal parts, the leader also paying the remainder, so the parts sum exactly to the cost."""
    if billing == "first" or group_size <= 1:
        return cost_nano if is_leader or group_size <= 1 else 0
    part = cost_nano // group_size
    return cost_nano - part * (group_size - 1) if is_leader else part
