"""Redis commands of one event-loop turn sent together: one pipelined round trip (no MULTI).

Under load many requests ask Redis something in the same turn of the loop (a budget reserve, a
cache lookup, a cache write); one write for all of them costs one system call each way instead
of one per command. Each command still runs on its own, in order; a command's error reply (a
script error, NOSCRIPT, WRONGTYPE) goes to its caller only, a connection failure to every caller
of the batch. A caller that stopped waiting (its timeout, or its request went away) is skipped:
the command may still have run.

A server reached directly gets the batches over a pipelined connection of the batcher's own
(`wire.Wire`), a Redis Cluster over one per primary (`cluster.Router`); others (Sentinel, the
embedded store) through a redis-py pipeline. Get the batcher of a client with
`connect.batcher_for`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import NoScriptError, ResponseError

from gateway.store.wire import Address, Wire

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


# How long a command sent with `execute_later` may wait for company.
LATER_S = 0.005


class Link(Protocol):
    """Where batches go when not through redis-py: a `wire.Wire`, a `cluster.Router`."""

    def send(self, batch: Sequence[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None: ...
    async def drain(self) -> None: ...
    async def aclose(self) -> None: ...


class CommandBatcher:
    def __init__(
        self, redis: Redis, address: Address | None = None, *, link: Link | None = None
    ) -> None:
        self._redis = redis
        self._wire: Link | None = link if address is None else Wire(address)
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._soon = False  # a send is scheduled for the end of this loop turn
        self._later: asyncio.TimerHandle | None = None  # a send is scheduled for later
        # SCRIPT LOADs done per script, and the lock that makes a burst of NOSCRIPTs load once.
        self._loads: dict[str, int] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """`redis.execute_command(*args)`, sent with the rest of this loop turn's commands."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._soon:
            self._soon = True
            loop.call_soon(self._send)
        self._pending.append((args, future))
        return future

    def execute_later(self, *args: Any, within_s: float = LATER_S) -> asyncio.Future[Any]:
        """`execute` for a command nobody waits on (a cache write): it goes with the next batch
        anyone sends, or after `within_s`, saving a round trip of its own under load."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._soon and self._later is None:
            self._later = loop.call_later(within_s, self._send)
        self._pending.append((args, future))
        return future

    def evalsha(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], *, later: bool = False
    ) -> asyncio.Future[Any]:
        """`script(keys, args)` as an EVALSHA sent with this loop turn's commands (a pipeline
        given the Script object would ask SCRIPT EXISTS first: one more round trip each time).
        After a NOSCRIPT (a store that restarted empty, a cluster primary that never saw the
        script), the script is loaded once for every caller that got one, on every primary of
        a cluster, and the command sent again: a burst of them is not a burst of loads.

        A future, not a coroutine: callers gather many (a settle burst) and a coroutine each
        would cost a task each; only a NOSCRIPT starts one. `later`: sent as `execute_later`
        sends (a cache write nobody waits on)."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        first = self.execute_later(*command) if later else self.execute(*command)
        result: asyncio.Future[Any] = first.get_loop().create_future()

        def landed(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or not isinstance(done.exception(), NoScriptError):
                _chain(done, result)
            elif not result.done():  # the caller still waits: load the script, send it again
                task = result.get_loop().create_task(self._load_and_retry(script, command))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda t: _chain(t, result))

        first.add_done_callback(landed)
        return result

    async def _load_and_retry(self, script: AsyncScript, command: tuple[Any, ...]) -> Any:
        await self._load(script)
        return await self.execute(*command)

    async def _load(self, script: AsyncScript) -> None:
        seen = self._loads.get(script.sha, 0)
        async with self._loading.setdefault(script.sha, asyncio.Lock()):
            if self._loads.get(script.sha, 0) == seen:  # nobody loaded it since our NOSCRIPT
                await self._redis.script_load(script.script)
                self._loads[script.sha] = seen + 1

    async def drain(self) -> None:
        """Send what is queued now and wait for the batches in flight (shutdown, tests)."""
        if self._pending:
            self._send()  # its call_soon then finds nothing to send
        if self._wire is not None:
            await self._wire.drain()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """`drain`, then close the batcher's own connection, if it has one."""
        await self.drain()
        if self._wire is not None:
            await self._wire.aclose()

    def _send(self) -> None:
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._wire is not None:
            self._wire.send(batch)
            return
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                try:
                    args = batch[0][0]
                    replies: list[Any] = [await self._redis.execute_command(*args)]  # type: ignore[no-untyped-call]
                except ResponseError as exc:  # this command's own error reply
                    replies = [exc]
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection: every caller gets it
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def within(future: asyncio.Future[Any], seconds: float) -> Any:
    """`await future` (a batcher's), or TimeoutError after `seconds`: as `asyncio.timeout`
    around it, for a fraction of its cost on the request path (one timer, no context manager
    and no cancellation to undo). The command may still run; its reply is then dropped."""
    timer = future.get_loop().call_later(seconds, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """`source`'s outcome into `target`, unless `target` is already settled (its exception is
    retrieved either way, so none is reported as never retrieved)."""
    if source.cancelled():
        if not target.done():
            target.cancel()
    elif (exc := source.exception()) is not None:
        if not target.done():
            target.set_exception(exc)
    elif not target.done():
        target.set_result(source.result())
