"""Anomaly detection over one team's fine buckets, one bucket at a time: spikes, drops and
drift, and their lifecycle (open -> escalated -> resolved). Pure: the caller feeds the history
(`SeriesHistory`), the state (`TeamState`) and the open anomalies, and stores what changed.

- **spike**: the team's spend, or one key's or one requested model's, above its band (robust
  z >= the team's `z`, see `gateway.analytics.baseline`). One bucket opens an anomaly when it
  is far out (z >= twice the threshold) and its excess reaches the minimum dollar impact;
  otherwise the next bucket must confirm it, and the run opens once its excess reaches the
  minimum. So an anomaly is raised one or two buckets after it starts (later only if it takes
  longer to cost the minimum), and a single noisy bucket raises nothing. A moderate shift that
  stays inside the band bucket by bucket is found, once there is a seasonal baseline, by a
  one-sided CUSUM of the deviations (slack z/3, limit 8z/3, over at most 24 buckets) when it
  is 20 % or more above the baseline and has cost the minimum: it is `sustained`, and goes on
  while its buckets stay above the slack.
- **drop**: a team that spends nothing for `drop_buckets` buckets while its baseline expected
  at least 20 requests and the minimum dollar impact over them (a broken integration).
- **drift**: checked at the end of each UTC day on the last `drift_days` daily totals, each
  divided by its weekday's factor (the median ratio of that weekday to its centred 7-day
  average over the days kept, so two weeks of history are needed; none with
  `seasonal_weeks: 0`): a Mann-Kendall rise at p < 0.01 whose Theil-Sen line rises by
  `drift_min_rise` or more, costing the minimum or more per day. It resolves at the first
  daily check that finds no drift.

Severity is the highest level whose z and dollar excess the anomaly both reaches (drift: the
dollars alone). An anomaly resolves after `resolve_after_buckets` buckets back within its band
(drift: see above).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway.analytics.anomaly import TEAM_SCOPE, Anomaly, Kind, Run, TeamState, anomaly_id
from gateway.analytics.baseline import (
    DAY_S,
    Baselines,
    Mode,
    mann_kendall_z,
    sen_slope,
    weekday_factors,
)
from gateway.analytics.causes import Cause, rank_causes, rank_drop_causes
from gateway.analytics.money import usd_text
from gateway.rollupformat import (
    SERIES_KEY,
    SERIES_MODEL,
    SERIES_ROUTE,
    SERIES_TEAM,
    SERIES_TEAM_METRICS,
    series_field,
    split_series_field,
)

if TYPE_CHECKING:
    from gateway.analytics.series import SeriesHistory
    from gateway.config.model import AnomaliesConfig, AnomalyThresholds

Pattern = tuple[str, str, str, str]  # Anomaly.pattern()
Event = Literal["opened", "escalated", "resolved"]

_DROP_MIN_REQUESTS = 20.0  # expected over the quiet buckets: e^-20, zero is no accident
_DRIFT_Z = 2.33  # Mann-Kendall, one-sided p < 0.01
# A run's CUSUM (slack: a third of z) at this many times z is a sustained shift: at z 3, a
# run of buckets 2.75 sigma out opens in five, one 1.5 sigma out in sixteen.
_CUSUM_LIMIT = 8 / 3
# ... and only with a seasonal baseline (a flat one trails every morning's rise), 20 % or more
# above it (no baseline is exact: a few percent of bias, say a level catching up with growth,
# must not add up to an alert).
_SUSTAINED_RISE = 0.2
# ... and setting in within this many buckets: a slower rise is the drift test's.
_SUSTAINED_WINDOW = 24
_RELATIVE_FLOOR = 0.05  # a band never narrower than 5 % of the expectation
_MAX_Z = 1e6
_SCOPES = {"key": SERIES_KEY, "model": SERIES_MODEL}
_COST = series_field(SERIES_TEAM, "", "cost")
_REQUESTS = series_field(SERIES_TEAM, "", "requests")


@dataclass(frozen=True, slots=True)
class Score:
    """One bucket of one series against its baseline."""

    actual: float
    expected: float
    scale: float  # robust standard deviation, floored
    requests: float  # expected requests
    mode: Mode

    @property
    def excess(self) -> float:
        return self.actual - self.expected

    @property
    def z(self) -> float:
        if self.scale <= 0:
            return _MAX_Z if self.excess > 0 else (-_MAX_Z if self.excess < 0 else 0.0)
        return max(-_MAX_Z, min(self.excess / self.scale, _MAX_Z))


@dataclass(frozen=True, slots=True)
class Change:
    """Something to tell people about: the anomaly as it now is."""

    event: Event
    anomaly: Anomaly


class TeamDetector:
    def __init__(self, team: str, history: SeriesHistory, config: AnomaliesConfig) -> None:
        self.team = team
        self.history = history
        self.config = config
        self.baselines = Baselines(history, config.cold_start_buckets, config.seasonal_weeks)

    def evaluate(
        self,
        n: int,
        state: TeamState,
        open_anomalies: dict[str, Anomaly],
        suppress: Mapping[Pattern, str],
        now_s: float,
    ) -> list[Change]:
        """Evaluate bucket n (closed, its events applied). `open_anomalies` (kind -> anomaly)
        is updated in place: anomalies opened are added, resolved ones removed (and returned
        in a Change). `suppress`: patterns a person marked `expected` -> that anomaly's id."""
        thresholds = self.config.thresholds(self.team)
        if not thresholds.enabled:
            return []
        excluded = state.excluded_buckets()
        step = _Step(self, n, state, open_anomalies, suppress, now_s, thresholds, excluded)
        changes = step.spike() + step.drop()
        if (n + 1) * self.history.bucket_s % DAY_S == 0:
            changes += step.drift()
        state.forget_before(n - self.history.capacity)
        return changes

    def score(self, scope: str, n: int, excluded: set[int]) -> Score:
        cost_field, requests_field = scope_fields(scope)
        actual = self.history.value(cost_field, n)
        cost = self.baselines.expect(cost_field, n, excluded)
        requests = self.baselines.expect(requests_field, n, excluded)
        if requests.expected >= 1:
            per_request = cost.expected / requests.expected
        else:
            per_request = self._typical_cost(cost_field, requests_field, n)
        # Requests arrive at random: n of them vary by about sqrt(n) (Poisson), so the band is
        # never narrower than that, nor than a few percent of the expectation.
        floor = max(
            per_request * math.sqrt(max(requests.expected, 1.0)),
            _RELATIVE_FLOOR * cost.expected,
        )
        return Score(
            0.0 if math.isnan(actual) else actual,
            cost.expected,
            max(cost.scale, floor),
            requests.expected,
            cost.mode,
        )

    def totals(self, first: int, last: int, excluded: set[int]) -> dict[str, list[float]]:
        """[actual, expected] of every field the causes read, summed over buckets first..last."""
        sums: dict[str, list[float]] = {}
        for name in self.cause_fields():
            actual = expected = 0.0
            for m in range(first, last + 1):
                value = self.history.value(name, m)
                if not math.isnan(value):
                    actual += value
                expected += self.baselines.expect(name, m, excluded).expected
            sums[name] = [actual, expected]
        return sums

    def new_keys(self, since: int) -> frozenset[str]:
        keys = set()
        for name in self.history.names(SERIES_KEY + "|"):
            first = self.history.first_seen(name)
            if first is not None and first >= since:
                keys.add(split_series_field(name)[1])
        return frozenset(keys)

    def scopes(self) -> list[str]:
        scopes = [TEAM_SCOPE]
        for label, series in _SCOPES.items():
            for name in self.history.names(series + "|"):
                _, value, metric = split_series_field(name)
                if metric == "cost":
                    scopes.append(f"{label}:{value}")
        return scopes

    def cause_fields(self) -> list[str]:
        names = [series_field(SERIES_TEAM, "", metric) for metric in SERIES_TEAM_METRICS]
        for series in (SERIES_KEY, SERIES_ROUTE):
            names += self.history.names(series + "|")
        return names

    def _typical_cost(self, cost_field: str, requests_field: str, n: int) -> float:
        """Cost per request over the recent window, for a series expecting no requests now."""
        start = n - max(self.config.cold_start_buckets, DAY_S // self.history.bucket_s)
        cost = sum(v for v in self.history.window(cost_field, start, n) if not math.isnan(v))
        requests = sum(
            v for v in self.history.window(requests_field, start, n) if not math.isnan(v)
        )
        return cost / requests if requests else 0.0


def scope_fields(scope: str) -> tuple[str, str]:
    """(cost field, requests field) of a scope: "team", "key:<id>" or "model:<name>"."""
    if scope == TEAM_SCOPE:
        return _COST, _REQUESTS
    label, _, value = scope.partition(":")
    series = _SCOPES[label]
    return series_field(series, value, "cost"), series_field(series, value, "requests")


def severity_of(thresholds: AnomalyThresholds, z: float, excess_nano: float) -> str:
    reached = thresholds.levels[0].name
    for level in thresholds.levels[1:]:
        if z >= level.z and abs(excess_nano) >= level.min_nano:
            reached = level.name
    return reached


def _rank(severity: str, thresholds: AnomalyThresholds) -> int:
    return [level.name for level in thresholds.levels].index(severity)  # type: ignore[arg-type]


@dataclass(slots=True)
class _Step:
    """One bucket's evaluation of one team."""

    detector: TeamDetector
    n: int
    state: TeamState
    open: dict[str, Anomaly]
    suppress: Mapping[Pattern, str]
    now_s: float
    thresholds: AnomalyThresholds
    excluded: set[int]

    @property
    def config(self) -> AnomaliesConfig:
        return self.detector.config

    def spike(self) -> list[Change]:
        thresholds, slack = self.thresholds, self.thresholds.z / 3
        anomaly = self.open.get("spike")
        if anomaly is not None:
            score = self.detector.score(anomaly.scope, self.n, self.excluded)
            # A sustained shift goes on while its buckets stay above the CUSUM's slack.
            floor = slack if anomaly.sustained else thresholds.z
            if score.z >= floor and score.excess > 0:
                return self._extend(anomaly, score)
            return self._quiet(anomaly)
        ready: list[tuple[str, Run, int, bool]] = []
        runs = self.state.runs
        for scope in self.detector.scopes():
            score = self.detector.score(scope, self.n, self.excluded)
            run = runs.get(scope)
            if run is None:
                if score.z <= slack:
                    continue
                run = runs[scope] = Run(self.n)
            # One-sided CUSUM of the deviations less a slack of a third of the threshold; one
            # bucket counts for at most twice the threshold, so a spike does not linger in it.
            run.cusum = max(0.0, run.cusum + min(score.z, 2 * thresholds.z) - slack)
            if run.cusum <= 0 or run.count >= _SUSTAINED_WINDOW:
                del runs[scope]  # back in the band, or too slow a rise to be a shift
                continue
            run.count += 1
            run.excess += score.excess
            run.expected += score.expected
            run.variance += score.scale**2
            if score.z >= thresholds.z:
                if not run.streak:
                    run.streak_start, run.streak_excess = self.n, 0.0
                run.streak += 1
                run.streak_excess += score.excess
            else:
                run.streak = 0
            opens = self._ready(run, score)
            if opens is not None:
                ready.append((scope, run, *opens))
        if not ready:
            return []
        team = [r for r in ready if r[0] == TEAM_SCOPE]
        scope, run, first, sustained = team[0] if team else max(ready, key=lambda r: r[1].excess)
        anomaly = self._new("spike", scope, first)
        anomaly.sustained = sustained
        anomaly.totals = self.detector.totals(first, self.n, self.excluded)
        anomaly.causes = self._spike_causes(anomaly, first)
        self._add_band(anomaly, first, self.n)
        runs.clear()
        return [self._opened(anomaly, first)]

    def drop(self) -> list[Change]:
        anomaly = self.open.get("drop")
        score = self.detector.score(TEAM_SCOPE, self.n, self.excluded)
        if anomaly is not None:
            low = score.expected - self.thresholds.z * score.scale
            if score.actual > 0 and score.actual >= low:
                return self._quiet(anomaly)
            return self._extend(anomaly, score)
        if score.mode == Mode.COLD or score.actual > 0 or score.expected <= 0:
            self.state.drop = None
            return []
        run = self.state.drop or Run(self.n)
        run.count += 1
        run.excess += score.excess
        run.variance += score.scale**2
        run.expected_requests += score.requests
        self.state.drop = run
        if (
            run.count < self.config.drop_buckets
            or run.expected_requests < _DROP_MIN_REQUESTS
            or -run.excess < self.thresholds.min_impact_nano
        ):
            return []
        anomaly = self._new("drop", TEAM_SCOPE, run.start)
        anomaly.totals = self.detector.totals(run.start, self.n, self.excluded)
        anomaly.causes = rank_drop_causes(_pairs(anomaly.totals))
        self._add_band(anomaly, run.start, self.n)
        self.state.drop = None
        return [self._opened(anomaly, run.start)]

    def drift(self) -> list[Change]:
        """At the end of a UTC day: do the last `drift_days` days keep rising?"""
        history, bucket_s = self.detector.history, self.detector.history.bucket_s
        day = DAY_S // bucket_s
        days = self.config.drift_days
        end = self.n + 1  # the day's end
        anomaly = self.open.get("drift")
        kept = min(history.span(_COST, end), history.capacity) // day
        weekly = self.config.seasonal_weeks > 0
        if kept < (max(days, 2 * 7) if weekly else days):
            return []
        windows = [(end - (i + 1) * day, end - i * day) for i in reversed(range(kept))]
        totals = [_window_sum(history, _COST, a, b) for a, b in windows]
        values = totals[-days:]
        if weekly:
            # Days of the week differ (weekends): each day is divided by its weekday's factor,
            # or every Monday would look like a rise.
            factors = weekday_factors(totals, (windows[0][0] * bucket_s // DAY_S) % 7)
            if factors is None:
                return self._resolve(anomaly) if anomaly is not None else []
            first = (windows[-days][0] * bucket_s // DAY_S) % 7
            values = [v / factors[(first + i) % 7] for i, v in enumerate(values)]
        z = mann_kendall_z(values)
        slope, start = sen_slope(values)
        rise = slope * (days - 1) / start if start > 0 else 0.0
        last = totals[-1]
        excess = last * rise / (1 + rise) if rise > 0 else 0.0
        drifting = (
            z >= _DRIFT_Z
            and rise >= self.config.drift_min_rise
            and excess >= self.thresholds.min_impact_nano
        )
        if not drifting:
            return self._resolve(anomaly) if anomaly is not None else []
        first_day, last_day = windows[-days], windows[-1]
        opening = anomaly is None
        if anomaly is None:
            anomaly = self._new("drift", TEAM_SCOPE, first_day[0])
        old = _window_sums(history, self.detector.cause_fields(), first_day)
        now = _window_sums(history, self.detector.cause_fields(), last_day)
        scale = (last - excess) / old[_COST] if old.get(_COST) else 0.0
        anomaly.totals = {name: [now[name], old.get(name, 0.0) * scale] for name in now}
        anomaly.actual_nano, anomaly.expected_nano = round(last), round(last - excess)
        anomaly.band_low_nano = anomaly.band_high_nano = anomaly.expected_nano
        anomaly.z, anomaly.end_s = z, end * bucket_s
        anomaly.buckets += 1
        anomaly.causes = rank_causes(_pairs(anomaly.totals))
        if opening:
            return [self._opened(anomaly, first_day[0])]
        return self._escalate(anomaly, severity_of(self.thresholds, math.inf, excess))

    def _ready(self, run: Run, score: Score) -> tuple[int, bool] | None:
        """(first bucket, sustained?) of the anomaly the run now is, if it is one."""
        least = self.thresholds.min_impact_nano
        if score.mode == Mode.COLD:
            least = self.config.cold_start_min_nano  # type: ignore[assignment]
            if least is None or not run.streak or run.streak_excess < least:
                return None
            return run.streak_start, False
        far_out = score.z >= 2 * self.thresholds.z
        if run.streak and run.streak_excess >= least and (run.streak >= 2 or far_out):
            return run.streak_start, False
        if (
            score.mode in (Mode.DAILY, Mode.WEEKLY)
            and run.cusum >= _CUSUM_LIMIT * self.thresholds.z
            and run.excess >= max(least, _SUSTAINED_RISE * run.expected)
        ):
            return run.start, True
        return None

    def _new(self, kind: Kind, scope: str, first: int) -> Anomaly:
        bucket_s = self.detector.history.bucket_s
        start_s = first * bucket_s
        return Anomaly(
            id=anomaly_id(self.detector.team, kind, start_s),
            team=self.detector.team,
            kind=kind,
            scope=scope,
            status="open",
            severity=self.thresholds.levels[0].name,
            start_s=start_s,
            end_s=(self.n + 1) * bucket_s,
            bucket_s=bucket_s,
            detected_s=self.now_s,
            updated_s=self.now_s,
        )

    def _opened(self, anomaly: Anomaly, first: int) -> Change:
        if anomaly.kind != "drift":
            self.state.exclude(first, self.n)
            z = anomaly.z
        else:
            z = math.inf
        anomaly.severity = severity_of(self.thresholds, z, anomaly.excess_nano)
        pattern = anomaly.pattern()
        if pattern is not None and pattern in self.suppress:
            anomaly.suppressed_by = self.suppress[pattern]
        self.open[anomaly.kind] = anomaly
        self.state.open[anomaly.kind] = anomaly.id
        return Change("opened", anomaly)

    def _add_band(self, anomaly: Anomaly, first: int, last: int) -> None:
        """Add buckets first..last of the anomaly's own series to its numbers."""
        for m in range(first, last + 1):
            self._add_bucket(anomaly, self.detector.score(anomaly.scope, m, self.excluded))
        self._refresh_z(anomaly)

    def _add_bucket(self, anomaly: Anomaly, score: Score) -> None:
        width = self.thresholds.z * score.scale
        anomaly.buckets += 1
        anomaly.actual_nano += round(score.actual)
        anomaly.expected_nano += round(score.expected)
        anomaly.band_low_nano += round(max(score.expected - width, 0.0))
        anomaly.band_high_nano += round(score.expected + width)
        anomaly.variance += score.scale**2

    def _refresh_z(self, anomaly: Anomaly) -> None:
        deviation = abs(anomaly.excess_nano)
        anomaly.z = min(deviation / math.sqrt(anomaly.variance), _MAX_Z) if anomaly.variance else 0

    def _extend(self, anomaly: Anomaly, score: Score) -> list[Change]:
        """Another unusual bucket of an open spike or drop."""
        self._add_bucket(anomaly, score)
        self._refresh_z(anomaly)
        anomaly.quiet = 0
        anomaly.end_s = (self.n + 1) * anomaly.bucket_s
        for name, (actual, expected) in self.detector.totals(self.n, self.n, self.excluded).items():
            sums = anomaly.totals.setdefault(name, [0.0, 0.0])
            sums[0] += actual
            sums[1] += expected
        if anomaly.kind == "spike":
            anomaly.causes = self._spike_causes(anomaly, anomaly.start_s // anomaly.bucket_s)
        else:
            anomaly.causes = rank_drop_causes(_pairs(anomaly.totals))
        self.state.exclude(self.n, self.n)
        severity = severity_of(self.thresholds, anomaly.z, anomaly.excess_nano)
        return self._escalate(anomaly, severity)

    def _escalate(self, anomaly: Anomaly, severity: str) -> list[Change]:
        anomaly.updated_s = self.now_s
        if _rank(severity, self.thresholds) <= _rank(anomaly.severity, self.thresholds):
            return []
        anomaly.severity, anomaly.status = severity, "escalated"
        return [Change("escalated", anomaly)]

    def _quiet(self, anomaly: Anomaly) -> list[Change]:
        anomaly.quiet += 1
        anomaly.updated_s = self.now_s
        if anomaly.quiet < self.config.resolve_after_buckets:
            return []
        return self._resolve(anomaly)

    def _resolve(self, anomaly: Anomaly) -> list[Change]:
        anomaly.updated_s = self.now_s
        anomaly.status, anomaly.resolved_s = "resolved", self.now_s
        del self.open[anomaly.kind]
        self.state.open.pop(anomaly.kind, None)
        return [Change("resolved", anomaly)]

    def _spike_causes(self, anomaly: Anomaly, first: int) -> list[Cause]:
        causes = rank_causes(_pairs(anomaly.totals), self.detector.new_keys(first))
        if anomaly.scope == TEAM_SCOPE:
            return causes
        # One key or model tripped on its own: it is the cause, whatever the team's total did.
        label, _, value = anomaly.scope.partition(":")
        new = label == "key" and value in self.detector.new_keys(first)
        actual, expected = anomaly.actual_nano, anomaly.expected_nano
        detail = f"{usd_text(actual)} vs {usd_text(expected)} expected"
        if new:
            detail = "new key, never seen before"
        own = Cause(label, value, anomaly.excess_nano, 1.0, detail)
        return [own, *(c for c in causes if (c.kind, c.value) != (label, value))]


def _pairs(totals: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    return {name: (pair[0], pair[1]) for name, pair in totals.items()}


def _window_sum(history: SeriesHistory, name: str, start: int, stop: int) -> float:
    return sum(v for v in history.window(name, start, stop) if not math.isnan(v))


def _window_sums(
    history: SeriesHistory, names: list[str], window: tuple[int, int]
) -> dict[str, float]:
    return {name: _window_sum(history, name, *window) for name in names}
