"""One team's recent fine buckets (`anomalies.bucket_s`), as the detector reads them: a ring of
the last `capacity` buckets per series field ("<series>|<value>|<metric>", as
`gateway.rollupformat.series_field` names them).

A bucket is numbered by its start: n = start_s // bucket_s. A field absent from a bucket is 0
there; before a field was first seen it is unknown (NaN), so a new key or model starts its own
history instead of inheriting zeros it never had.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping


class SeriesHistory:
    __slots__ = ("_first", "_last_used", "_values", "bucket_s", "capacity", "newest")

    def __init__(self, bucket_s: int, capacity: int) -> None:
        self.bucket_s = bucket_s
        self.capacity = capacity
        self.newest: int | None = None  # the newest bucket put
        self._values: dict[str, array[float]] = {}
        self._first: dict[str, int] = {}  # field -> first bucket it was seen in
        self._last_used: dict[str, int] = {}  # field -> last bucket it was non-zero in

    def put(self, n: int, fields: Mapping[str, float]) -> None:
        """Set bucket n to `fields` (replacing what it held: a re-read with late events), and
        every bucket between the newest and n to zero."""
        newest = self.newest
        if newest is not None and n <= newest - self.capacity:
            return  # older than anything kept
        if newest is None or n - newest > self.capacity:
            gap: range = range(0)
            if newest is not None:
                self._values.clear()
                self._first.clear()
                self._last_used.clear()
        else:
            gap = range(newest + 1, n)
        cap = self.capacity
        for name, ring in self._values.items():
            for m in gap:
                ring[m % cap] = 0.0
            ring[n % cap] = float(fields.get(name, 0))
        for name, value in fields.items():
            if name not in self._values:
                ring = self._values[name] = array("d", [0.0]) * cap
                ring[n % cap] = float(value)
                self._first[name] = n
            elif n < self._first[name]:
                self._first[name] = n
            if value:
                self._last_used[name] = max(self._last_used.get(name, n), n)
        if newest is None or n > newest:
            self.newest = n
            self._forget_idle(n)

    def value(self, name: str, n: int) -> float:
        """The field's value in bucket n; NaN when unknown (before it was first seen, or no
        longer kept)."""
        ring = self._values.get(name)
        newest = self.newest
        if ring is None or newest is None or n > newest or n <= newest - self.capacity:
            return math.nan
        if n < self._first[name]:
            return math.nan
        return ring[n % self.capacity]

    def window(self, name: str, start: int, stop: int) -> list[float]:
        """Values of buckets start..stop-1 (NaN where unknown)."""
        ring = self._values.get(name)
        newest = self.newest
        if ring is None or newest is None or stop <= start:
            return [math.nan] * max(stop - start, 0)
        low = max(start, self._first[name], newest - self.capacity + 1)
        high = min(stop, newest + 1)
        if high <= low:
            return [math.nan] * (stop - start)
        cap = self.capacity
        known = [ring[m % cap] for m in range(low, high)]
        return [math.nan] * (low - start) + known + [math.nan] * (stop - high)

    def first_seen(self, name: str) -> int | None:
        return self._first.get(name)

    def span(self, name: str, n: int) -> int:
        """Buckets of known history the field has before bucket n."""
        first = self._first.get(name)
        newest = self.newest
        if first is None or newest is None:
            return 0
        oldest = max(first, newest - self.capacity + 1)
        return max(0, n - oldest)

    def names(self, prefix: str = "") -> Iterator[str]:
        return (name for name in self._values if name.startswith(prefix))

    def values_of(self, names: Iterable[str], n: int) -> dict[str, float]:
        return {name: self.value(name, n) for name in names}

    def _forget_idle(self, n: int) -> None:
        """Drop fields that have been zero for as long as anything is kept (a revoked key)."""
        idle = [name for name, last in self._last_used.items() if last <= n - self.capacity]
        idle += [name for name in self._values if name not in self._last_used]
        for name in idle:
            if self._first.get(name, n) <= n - self.capacity:
                self._values.pop(name, None)
                self._first.pop(name, None)
                self._last_used.pop(name, None)
