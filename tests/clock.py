"""Clocks for tests: no test depends on today's date or the machine's clock (STYLE.md).

`T0` is the fixed moment tests date their events at; `FakeClock` stands still until moved;
`RunningClock` starts at a fixed moment and runs at the machine's pace, for whole gateways whose
timers (leases, cooldowns) must see time pass; a test may move it on."""

from __future__ import annotations

import time
from datetime import UTC, datetime

T0 = datetime(2026, 11, 5, 10, 30, tzinfo=UTC)  # mid-month, mid-morning: no boundary near
T0_MS = int(T0.timestamp() * 1000)

# The moments where periods turn over, for tests that compute months, days and buckets.
AWKWARD_MOMENTS = (
    datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC),  # first second of a month
    datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC),  # last second of a month
    datetime(2028, 2, 29, 12, 0, 0, tzinfo=UTC),  # a leap day
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),  # the last second of a year
)


def _seconds(when: datetime | float) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)


class FakeClock:
    """Epoch seconds that change only when the test says so."""

    def __init__(self, now: datetime | float = T0) -> None:
        self.now = _seconds(now)

    def __call__(self) -> float:
        return self.now

    def set(self, when: datetime | float) -> None:
        self.now = _seconds(when)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RunningClock:
    """Epoch seconds from a fixed start, advancing with the machine's monotonic clock, and
    moved on at once by `advance` (a TTL passes without the test waiting for it)."""

    def __init__(self, start: datetime | float = T0) -> None:
        self._start = _seconds(start)
        self._origin = time.monotonic()

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._origin)

    def advance(self, seconds: float) -> None:
        self._start += seconds
