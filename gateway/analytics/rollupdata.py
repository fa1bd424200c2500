"""Rollups as the analytics functions see them: plain integers per team, bucket, dimension, value
and metric, already read from Redis (by `gateway.store.rollups`). No I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from gateway.rollupformat import split_field

# value -> metric -> amount
Values = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class RollupData:
    """(team, bucket, dimension) -> value -> metric -> amount, for buckets of one granularity
    ("d": YYYYMMDD, "h": YYYYMMDDHH) from `start` to `end` inclusive."""

    granularity: str
    start: date
    end: date
    cells: Mapping[tuple[str, str, str], Values]

    @classmethod
    def from_hashes(
        cls,
        granularity: str,
        start: date,
        end: date,
        hashes: Mapping[tuple[str, str, str], Mapping[str, int]],
    ) -> RollupData:
        """From raw rollup hashes ("<value>|<metric>" -> amount), as HGETALL returns them."""
        cells: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
        for ident, raw in hashes.items():
            if not raw:
                continue
            values = cells.setdefault(ident, {})
            for hash_field, amount in raw.items():
                value, metric = split_field(hash_field)
                metrics = values.setdefault(value, {})
                metrics[metric] = metrics.get(metric, 0) + amount
        return cls(granularity, start, end, cells)

    def by_team(self) -> dict[str, RollupData]:
        """Each team's rollups apart, in one pass: `values` scans every cell it holds, so a
        report asking many questions of each of many teams asks them of the team's part."""
        parts: dict[str, dict[tuple[str, str, str], Values]] = {}
        for ident, values in self.cells.items():
            parts.setdefault(ident[0], {})[ident] = values
        return {
            team: RollupData(self.granularity, self.start, self.end, cells)
            for team, cells in parts.items()
        }

    def teams(self) -> list[str]:
        return sorted({team for team, _, _ in self.cells})

    def buckets(self, team: str | None = None) -> list[str]:
        return sorted({b for t, b, _ in self.cells if team is None or t == team})

    def values(self, team: str, dimension: str, buckets: Iterable[str] | None = None) -> Values:
        """The dimension's values summed over `buckets` (default: all of them)."""
        wanted = None if buckets is None else set(buckets)
        out: dict[str, dict[str, int]] = {}
        for (t, bucket, dim), values in self.cells.items():
            if t != team or dim != dimension or (wanted is not None and bucket not in wanted):
                continue
            for value, metrics in values.items():
                into = out.setdefault(value, {})
                for metric, amount in metrics.items():
                    into[metric] = into.get(metric, 0) + amount
        return out

    def team_metrics(self, team: str) -> Mapping[str, int]:
        """The team's totals over the whole range (its "team" dimension)."""
        summed: dict[str, int] = {}
        for metrics in self.values(team, "team").values():
            for metric, amount in metrics.items():
                summed[metric] = summed.get(metric, 0) + amount
        return summed


def days(start: date, end: date) -> list[date]:
    """Every day from start to end, inclusive."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day_bucket(day: date) -> str:
    return day.strftime("%Y%m%d")


def bucket_day(bucket: str) -> date:
    return date(int(bucket[:4]), int(bucket[4:6]), int(bucket[6:8]))


def month_range(month: str) -> tuple[date, date]:
    """First and last day of "YYYY-MM"; ValueError if it is not one."""
    year_text, sep, month_text = month.partition("-")
    if not sep or len(year_text) != 4 or len(month_text) != 2 or not year_text.isdigit():
        raise ValueError(f"expected a month as YYYY-MM, got {month!r}")
    first = date(int(year_text), int(month_text), 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - timedelta(days=1)
