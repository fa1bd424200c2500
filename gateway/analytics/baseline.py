"""Robust baselines of a bucketed series: what a bucket is expected to hold, and how far from
that is unusual (a robust standard deviation), from the series' own history.

Medians and the median absolute deviation (MAD, x1.4826 to read as a standard deviation), so
that a spike in the history moves neither; buckets of a known anomaly are left out as well.
How the expectation is formed depends on how much history the series has:

- cold: fewer than `cold_start_buckets`: the median of what there is (alerts are held back);
- flat: the median and MAD of the last `cold_start_buckets` buckets;
- daily (two days of history): per hour of the day, the median and MAD of that hour's buckets
  over the last 7 days;
- weekly (two weeks, and `seasonal_weeks` > 0): per hour of the week, over the last
  `seasonal_weeks` weeks.

Seasonal profiles are interpolated between hour centres. A weekly one is multiplied by the
series' current level, the ratio of the last 24 hours' actual to what the profile expected of
them, so that a team that grew since the weeks it reads is measured against its new size (a
slow rise over days is the drift test's to find); a daily one reads the last days themselves.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.analytics.series import SeriesHistory

HOUR_S = 3600
DAY_S = 86_400
WEEK_S = 7 * DAY_S
MAD_SIGMA = 1.4826  # MAD x this estimates a normal distribution's standard deviation
_DAILY_LOOKBACK_DAYS = 7
_LEVEL_BOUNDS = (0.25, 4.0)


class Mode(StrEnum):
    COLD = "cold"
    FLAT = "flat"
    DAILY = "daily"
    WEEKLY = "weekly"


@dataclass(frozen=True, slots=True)
class Expectation:
    expected: float
    scale: float  # one bucket's robust standard deviation (before floors)
    mode: Mode


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    size = len(ordered)
    if not size:
        return math.nan
    middle = size // 2
    return ordered[middle] if size % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def robust_scale(values: Sequence[float], center: float) -> float:
    return MAD_SIGMA * median([abs(v - center) for v in values]) if values else 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    """Per hour slot of a day (24) or a week (168): the median and robust scale of a bucket."""

    period_slots: int
    medians: tuple[float, ...]
    scales: tuple[float, ...]

    def hours_total(self, first_hour: int, hours: int, per_hour: int) -> float:
        """What the profile expects over whole hours first_hour.. (hours since the epoch)."""
        medians, slots = self.medians, self.period_slots
        return per_hour * sum(medians[h % slots] for h in range(first_hour, first_hour + hours))

    def at(self, start_s: int, bucket_s: int) -> tuple[float, float]:
        """(median, scale) at a bucket, interpolated linearly between the slots' centres."""
        position = (start_s + bucket_s / 2) / HOUR_S - 0.5
        low = math.floor(position)
        weight = position - low
        a, b = low % self.period_slots, (low + 1) % self.period_slots
        return (
            self.medians[a] * (1 - weight) + self.medians[b] * weight,
            self.scales[a] * (1 - weight) + self.scales[b] * weight,
        )


def build_profile(values: Sequence[float], first: int, bucket_s: int, period_slots: int) -> Profile:
    """The profile of buckets first, first+1, ...; NaN values (unknown, or excluded) are left
    out. A slot without data takes the median of all slots."""
    slots: list[list[float]] = [[] for _ in range(period_slots)]
    for i, value in enumerate(values):
        if not math.isnan(value):
            slots[((first + i) * bucket_s // HOUR_S) % period_slots].append(value)
    medians = [median(s) for s in slots]
    scales = [robust_scale(s, m) if s else math.nan for s, m in zip(slots, medians, strict=True)]
    known = [m for m in medians if not math.isnan(m)]
    fill_median = median(known) if known else 0.0
    known_scales = [s for s in scales if not math.isnan(s)]
    fill_scale = median(known_scales) if known_scales else 0.0
    return Profile(
        period_slots,
        tuple(fill_median if math.isnan(m) else m for m in medians),
        tuple(fill_scale if math.isnan(s) else s for s in scales),
    )


class Baselines:
    """Expectations of one team's series. Profiles are rebuilt once a day (they read whole
    days before today), level factors once an hour; both are cached per field."""

    def __init__(
        self, history: SeriesHistory, cold_start_buckets: int, seasonal_weeks: int
    ) -> None:
        self.history = history
        self.cold_start_buckets = cold_start_buckets
        self.seasonal_weeks = seasonal_weeks
        self._profiles: dict[tuple[str, Mode, int], Profile] = {}
        self._levels: dict[tuple[str, int], float] = {}

    def mode(self, name: str, n: int) -> Mode:
        span = self.history.span(name, n)
        span_s = span * self.history.bucket_s
        if span < self.cold_start_buckets:
            return Mode.COLD
        if self.seasonal_weeks and span_s >= 2 * WEEK_S:
            return Mode.WEEKLY
        if span_s >= 2 * DAY_S:
            return Mode.DAILY
        return Mode.FLAT

    def expect(self, name: str, n: int, excluded: Collection[int] = ()) -> Expectation:
        mode = self.mode(name, n)
        if mode in (Mode.COLD, Mode.FLAT):
            window = self._window(name, n - self.cold_start_buckets, n, excluded)
            center = median(window) if window else 0.0
            return Expectation(center, robust_scale(window, center), mode)
        profile = self.profile(name, n, mode, excluded)
        typical, scale = profile.at(n * self.history.bucket_s, self.history.bucket_s)
        # A daily profile comes from the last days themselves (weekends and all): scaling it by
        # yesterday would make every Monday morning a spike.
        level = self.level(name, n, profile, excluded) if mode == Mode.WEEKLY else 1.0
        return Expectation(typical * level, scale * level, mode)

    def profile(self, name: str, n: int, mode: Mode, excluded: Collection[int] = ()) -> Profile:
        bucket_s = self.history.bucket_s
        day = n * bucket_s // DAY_S
        key = (name, mode, day)
        cached = self._profiles.get(key)
        if cached is not None:
            return cached
        if len(self._profiles) > 20_000:  # yesterday's, and fields gone since
            self._profiles = {k: p for k, p in self._profiles.items() if k[2] == day}
        today = day * DAY_S // bucket_s  # the first bucket of n's day
        if mode == Mode.WEEKLY:
            # Up to yesterday: the level is measured on the last 24 hours, which must not be
            # measured against themselves.
            stop = today - DAY_S // bucket_s
            weeks = min(self.seasonal_weeks, self.history.span(name, stop) * bucket_s // WEEK_S)
            lookback, slots = max(weeks, 1) * WEEK_S, 168
        else:
            stop = today
            lookback, slots = _DAILY_LOOKBACK_DAYS * DAY_S, 24
        first = stop - lookback // bucket_s
        values = self._masked(name, first, stop, excluded)
        profile = self._profiles[key] = build_profile(values, first, bucket_s, slots)
        return profile

    def level(self, name: str, n: int, profile: Profile, excluded: Collection[int] = ()) -> float:
        """The last 24 whole hours' actual over their profile, bounded: how the series' size
        now compares with the weeks (or days) its profile comes from."""
        bucket_s = self.history.bucket_s
        hour = n * bucket_s // HOUR_S
        key = (name, hour)
        cached = self._levels.get(key)
        if cached is not None:
            return cached
        if len(self._levels) > 50_000:
            self._levels = {k: v for k, v in self._levels.items() if k[1] == hour}
        per_hour = HOUR_S // bucket_s
        first = (hour - 24) * per_hour
        values = self._masked(name, first, hour * per_hour, excluded)
        actual = expected = 0.0
        for i, value in enumerate(values):
            if not math.isnan(value):
                actual += value
                expected += profile.medians[(hour - 24 + i // per_hour) % profile.period_slots]
        low, high = _LEVEL_BOUNDS
        level = 1.0 if expected <= 0 else min(max(actual / expected, low), high)
        self._levels[key] = level
        return level

    def _window(self, name: str, start: int, stop: int, excluded: Collection[int]) -> list[float]:
        return [v for v in self._masked(name, start, stop, excluded) if not math.isnan(v)]

    def _masked(self, name: str, start: int, stop: int, excluded: Collection[int]) -> list[float]:
        values = self.history.window(name, start, stop)
        if excluded:
            for m in excluded:
                if start <= m < stop:
                    values[m - start] = math.nan
        return values


def weekday_factors(days: Sequence[float], first_weekday: int) -> list[float] | None:
    """Each weekday's share of a week, from daily totals: the median ratio of its days to their
    centred 7-day average (classical decomposition, so a trend does not leak into it),
    normalised to a mean of 1. `first_weekday`: the first day's (epoch days % 7). None when a
    weekday has no ratio yet (under two weeks of days)."""
    ratios: list[list[float]] = [[] for _ in range(7)]
    for i in range(3, len(days) - 3):
        average = sum(days[i - 3 : i + 4]) / 7
        if average > 0:
            ratios[(first_weekday + i) % 7].append(days[i] / average)
    if not all(ratios):
        return None
    factors = [median(r) for r in ratios]
    mean = sum(factors) / 7
    return [f / mean for f in factors] if mean > 0 else None


def mann_kendall_z(values: Sequence[float]) -> float:
    """The Mann-Kendall trend test's normal score (ties ignored): large and positive when the
    values keep rising. At n=7, z >= 2.33 is a rise at one-sided p < 0.01."""
    n = len(values)
    if n < 3:
        return 0.0
    s = sum(
        (values[j] > values[i]) - (values[j] < values[i]) for i in range(n) for j in range(i + 1, n)
    )
    variance = n * (n - 1) * (2 * n + 5) / 18
    if s == 0:
        return 0.0
    return (s - 1 if s > 0 else s + 1) / math.sqrt(variance)


def sen_slope(values: Sequence[float]) -> tuple[float, float]:
    """(slope per step, intercept at step 0) of the Theil-Sen line: the median of the pairwise
    slopes, robust to a few wild points."""
    n = len(values)
    if n < 2:
        return 0.0, values[0] if values else 0.0
    slope = median([(values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n)])
    return slope, median([v - slope * i for i, v in enumerate(values)])
