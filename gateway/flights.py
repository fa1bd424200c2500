"""One call per key at a time: the callers that ask for a key while its call is in flight await
that call rather than starting their own (a cold replica's burst reading one key record, a
team's first settles registering its stream, the requests waiting for one budget lease).

The call runs in a task of its own, shielded from each caller: one that goes away stops waiting
without cancelling the call for the others. Every caller gets its result or its exception; a
key asked for after the call has finished starts a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Flights(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        """Calls in flight."""
        return len(self._running)

    async def run(self, key: K, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`call()`'s outcome: the one in flight for `key`, else a new one's."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(call())
            self._running[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: K, done: asyncio.Task[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone away
