"""Background work in short slices, so that it never holds a core the request path waits on.

On Linux (6.18, EEVDF, the benchmark VM's) a task that wakes beside a CPU-bound one often waits
until that one's burst ends, whatever their priorities: a 1.5 ms burst of the aggregator delays
by up to that much the upstream or Redis answering the request in flight on the same core, and
neither `nice` nor `SCHED_IDLE` for the aggregator changed that (docs/benchmarks.md, "The
aggregator gives its core way"). A process doing background work calls `give_way` in its loops:
once per `slice_s` of work it hands the core to whatever is waiting for it (`sched_yield`),
which, with nothing waiting, costs one system call.

Only the aggregator's own process slices its work (`spendgate aggregate`, and the local store's
aggregator child); a gateway never yields its core, so the aggregator embedded in one (the
in-process store) runs with `NO_SLICES`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SLICE_S = 0.0001  # 0.1 ms: a ping-pong beside a 1.5 ms burst went from p99 1.55 to 0.21 ms


def _no_yield() -> None:
    return None


class Slices:
    __slots__ = ("_clock", "_since", "_yield", "slice_s")

    def __init__(
        self,
        slice_s: float = SLICE_S,
        *,
        clock: Callable[[], float] = time.perf_counter,
        yield_cpu: Callable[[], None] | None = None,
    ) -> None:
        """`yield_cpu`: how to hand the core on (default `os.sched_yield`, where it exists)."""
        if yield_cpu is None:
            yield_cpu = getattr(os, "sched_yield", _no_yield)
        self.slice_s = slice_s
        self._clock = clock
        self._yield: Callable[[], None] = yield_cpu
        self._since = clock()

    def give_way(self) -> None:
        """Hand the core to whatever waits for it, if a slice has passed since the last time."""
        now = self._clock()
        if now - self._since >= self.slice_s:
            self._yield()
            self._since = self._clock()


class _NoSlices(Slices):
    __slots__ = ()

    def give_way(self) -> None:
        return None


NO_SLICES: Slices = _NoSlices()
