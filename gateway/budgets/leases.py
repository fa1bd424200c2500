"""Budget leases: a block of budget reserved in Redis once, then spent locally request by request.

Far from its limit, a budget gains nothing from a Redis round trip per request: no single
request can take it over. So when the last reservation showed that every budget of a request has
at least `1 / fraction x MIN_REQUESTS` times the request's worst case left, the ledger reserves a
lease instead: an ordinary reservation (reserve.lua, under the id `lease.<process>.<n>`) of
`fraction` of what the tightest budget has left, on the same counters. Requests then reserve
against the lease in memory; each one is still settled on its own (actual cost, spend event),
exactly as before. Nearer the limit no lease is granted (the script refuses one smaller than
MIN_REQUESTS requests) and every request reserves in Redis again, so a budget is never
overspent and the last requests before a limit are counted one by one.

A lease is open for `window_s`, or until it cannot hold the next request; then it closes and,
once the settles of everything it reserved have landed, is given back. If one of those settles
was spooled (Redis unreachable) the lease is left to its deadline instead, so that the money
stays held until the spool replays it. A process that dies holding a lease holds it until the
deadline (window plus `budgets.reservation_ttl_s`), as with any reservation.

While a lease is held, Redis counts its whole amount as reserved and the spent part again as
spent: other replicas see up to one lease less than is left, never more.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.config.model import BudgetConfig
from gateway.flights import Flights

# A lease smaller than this many requests of the one asking for it is not worth holding.
MIN_REQUESTS = 16

# What a lease is on: the team, its budgets that apply, and their current periods.
LeaseKey = tuple[str, tuple[BudgetConfig, ...], tuple[str, ...]]
# reserve.lua for a lease: (key, lease id, deadline ms, divisor, min nano, min tokens) -> reply.
GrantCall = Callable[[LeaseKey, str, int, float, int, int], Awaitable[Sequence[Any]]]
ReleaseCall = Callable[["Lease"], Coroutine[Any, Any, None]]


class _Remaining(Protocol):
    @property
    def remaining_nano(self) -> int | None: ...

    @property
    def remaining_tokens(self) -> int | None: ...


@dataclass(eq=False, slots=True)
class Lease:
    lease_id: str
    team: str
    budgets: tuple[BudgetConfig, ...]
    period_ids: tuple[str, ...]
    ends: tuple[datetime | None, ...]
    nano: int | None  # held in Redis; None: no budget of the set limits USD
    tokens: int | None  # None: no budget of the set limits tokens
    base: tuple[tuple[int, int, int, int], ...]  # per budget at grant, this lease included
    deadline_ms: int
    used_nano: int = 0  # in flight at their worst case, plus finished at their actual cost
    used_tokens: int = 0
    done_nano: int = 0  # finished, at their actual cost
    done_tokens: int = 0
    pending: int = 0  # reservations not settled yet
    closed: bool = False  # takes no more requests
    tainted: bool = False  # a settle was spooled: the hold stays until its deadline
    released: bool = False

    def take(self, nano: int, tokens: int) -> bool:
        """Hold one request's worst case, if the lease is open and has room for it."""
        if self.closed:
            return False
        if self.nano is not None and self.used_nano + nano > self.nano:
            return False
        if self.tokens is not None and self.used_tokens + tokens > self.tokens:
            return False
        self.used_nano += nano
        self.used_tokens += tokens
        self.pending += 1
        return True

    def finish(self, worst_nano: int, worst_tokens: int, cost_nano: int, tokens: int) -> None:
        """A request was settled: its worst case is replaced by what it cost."""
        self.used_nano += cost_nano - worst_nano
        self.used_tokens += tokens - worst_tokens
        self.done_nano += cost_nano
        self.done_tokens += tokens

    def settled(self, ok: bool) -> None:
        """The settle of one of its requests landed (ok) or was spooled."""
        self.pending -= 1
        if not ok:
            self.tainted = True

    @property
    def idle(self) -> bool:
        """Closed, every settle landed, not yet given back: release it now."""
        return self.closed and self.pending <= 0 and not self.tainted and not self.released

    def counts(self) -> list[tuple[int, int, int, int]]:
        """Each budget as this process sees it: spent and reserved at the grant, with what the
        lease spent since moved from reserved to spent and its unused part no longer held."""
        held_nano, held_tokens = self.nano or 0, self.tokens or 0
        in_flight_nano = self.used_nano - self.done_nano
        in_flight_tokens = self.used_tokens - self.done_tokens
        return [
            (
                spent + self.done_nano,
                reserved - held_nano + in_flight_nano,
                spent_tokens + self.done_tokens,
                reserved_tokens - held_tokens + in_flight_tokens,
            )
            for spent, reserved, spent_tokens, reserved_tokens in self.base
        ]


class LeaseBook:
    """This process's leases, one per key at a time: taken in memory, granted through `grant`
    (reserve.lua, pipelined by the ledger), given back through `release` once idle."""

    def __init__(
        self,
        grant: GrantCall,
        release: ReleaseCall,
        clock: Callable[[], float],
        fraction: float = 0.0,
        window_s: float = 5.0,
    ) -> None:
        self._grant_call, self._release_call, self._clock = grant, release, clock
        self._prefix = f"lease.{secrets.token_hex(4)}."
        self._numbers = itertools.count(1)
        self._open: dict[LeaseKey, Lease] = {}
        self._granting: Flights[LeaseKey, None] = Flights()
        self._far: dict[LeaseKey, bool] = {}  # the last reservation left room for a lease
        self._tasks: set[asyncio.Task[None]] = set()
        self.divisor, self.window_s = 0.0, window_s
        self.configure(fraction, window_s)

    def configure(self, fraction: float, window_s: float) -> None:
        """Lease `fraction` of what the tightest budget has left (0: never), for `window_s`.
        A change closes the open leases."""
        divisor = 1.0 / fraction if fraction > 0 else 0.0
        if (divisor, window_s) != (self.divisor, self.window_s):
            for lease in list(self._open.values()):
                self.close(lease)
            self._far.clear()
        self.divisor, self.window_s = divisor, window_s

    def take(self, key: LeaseKey, nano: int, tokens: int) -> Lease | None:
        """The open lease of `key`, if it has room for the request (then held in it)."""
        lease = self._open.get(key) if self._open else None
        return lease if lease is not None and lease.take(nano, tokens) else None

    async def acquire(
        self, key: LeaseKey, ends: tuple[datetime | None, ...], nano: int, tokens: int, ttl_s: float
    ) -> Lease | None:
        """`take`, or a new lease when the last reservation of `key` showed room for one (one
        grant at a time per key; the others wait for it); None: reserve in Redis."""
        lease = self._open.get(key)
        if lease is not None:
            if lease.take(nano, tokens):
                return lease
            self.close(lease)
        if not self._far.get(key):
            return None
        # One grant at a time per key; a caller that gives up does not cancel the others'.
        await self._granting.run(key, lambda: self._grant(key, ends, nano, tokens, ttl_s))
        return self.take(key, nano, tokens)

    def observed(
        self, key: LeaseKey, admitted: bool, status: Sequence[_Remaining], nano: int, tokens: int
    ) -> None:
        """A reservation of `key` made in Redis: is every budget far enough from its limit for
        the lease the script would grant this request?"""
        need_nano = self.divisor * MIN_REQUESTS * max(1, nano)
        need_tokens = self.divisor * MIN_REQUESTS * max(1, tokens)
        self._far[key] = admitted and all(
            (s.remaining_nano is None or s.remaining_nano >= need_nano)
            and (s.remaining_tokens is None or s.remaining_tokens >= need_tokens)
            for s in status
        )

    async def _grant(
        self, key: LeaseKey, ends: tuple[datetime | None, ...], nano: int, tokens: int, ttl_s: float
    ) -> None:
        team, budgets, period_ids = key
        lease_id = f"{self._prefix}{next(self._numbers)}"
        # Requests keep reserving in it for the window, and each may then run for ttl_s.
        deadline_ms = int(self._clock() * 1000) + int((self.window_s + ttl_s) * 1000)
        raw = await self._grant_call(
            key,
            lease_id,
            deadline_ms,
            self.divisor,
            MIN_REQUESTS * max(1, nano),
            MIN_REQUESTS * max(1, tokens),
        )
        if int(raw[0]) != 1:
            self._far[key] = False
            return
        n = len(budgets)
        values = [int(v) for v in raw[3 : 3 + 4 * n]]
        lease = Lease(
            lease_id,
            team,
            budgets,
            period_ids,
            ends,
            nano=None if all(b.limit_nano is None for b in budgets) else int(raw[3 + 4 * n]),
            tokens=None if all(b.limit_tokens is None for b in budgets) else int(raw[4 + 4 * n]),
            base=tuple(
                (values[i], values[i + 1], values[i + 2], values[i + 3]) for i in range(0, 4 * n, 4)
            ),
            deadline_ms=deadline_ms,
        )
        if (old := self._open.get(key)) is not None:
            self.close(old)
        self._open[key] = lease
        asyncio.get_running_loop().call_later(self.window_s, self.close, lease)

    def close(self, lease: Lease) -> None:
        """No more requests in it; given back once its settles have landed."""
        lease.closed = True
        key = (lease.team, lease.budgets, lease.period_ids)
        if self._open.get(key) is lease:
            del self._open[key]
        self._release_if_idle(lease)

    def settled(
        self,
        lease: Lease,
        worst: tuple[int, int],
        cost_nano: int,
        tokens: int,
        landed: bool,
    ) -> None:
        """The settle of a request held in `lease` landed, or failed (the caller spools it: the
        lease then stays held until its deadline)."""
        lease.finish(worst[0], worst[1], cost_nano, tokens)
        lease.settled(landed)
        self._release_if_idle(lease)

    def _release_if_idle(self, lease: Lease) -> None:
        if lease.idle:
            lease.released = True
            task = asyncio.get_running_loop().create_task(self._release_call(lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        """Close every lease and wait for those given back (shutdown)."""
        for lease in list(self._open.values()):
            self.close(lease)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
