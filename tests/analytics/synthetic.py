"""Synthetic fine-bucket histories for anomaly tests: weeks of a team's traffic with daily and
weekly seasonality and noise, from a seeded RNG, with injected anomalies of known start, size
and cause.

A team has keys and routes (requested model -> deployment, each with a price per token); each
bucket, each (key, route) cell draws its requests (Poisson around the seasonal rate), cache hits
(binomial), tokens per billed request (lognormal, summed) and cascade escalations, and the
bucket's fields come out as the aggregator writes them (`gateway.rollupformat.series_field`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from gateway.analytics.anomaly import Anomaly, TeamState
from gateway.analytics.detector import Change, Pattern, TeamDetector
from gateway.analytics.series import SeriesHistory
from gateway.config.model import AnomaliesConfig
from gateway.rollupformat import (
    SERIES_KEY,
    SERIES_MODEL,
    SERIES_ROUTE,
    SERIES_TEAM,
    join_parts,
    series_field,
)

BUCKET_S = 300
DAY = 86_400 // BUCKET_S
WEEK = 7 * DAY
# Monday 2026-10-05 00:00 UTC: four weeks later is T0's week (tests.clock).
EPOCH_S = 1_791_158_400
FIRST = EPOCH_S // BUCKET_S


@dataclass(frozen=True)
class Route:
    model: str
    deployment: str
    nano_per_token: float
    weight: float


CHEAP = Route("auto", "openai/gpt-4o-mini", 400.0, 0.75)  # nano-USD per token
DEAR = Route("auto", "openai/gpt-4o", 6000.0, 0.25)
LEGACY = Route("gpt-4o", "openai/gpt-4o", 6000.0, 0.0)


@dataclass(frozen=True)
class Team:
    name: str
    rate: float  # requests per bucket at the weekday peak
    keys: tuple[tuple[str, float], ...] = (
        ("key_000000000001", 0.35),
        ("key_000000000002", 0.25),
        ("key_000000000003", 0.2),
        ("key_000000000004", 0.2),
    )
    routes: tuple[Route, ...] = (CHEAP, DEAR)
    tokens: float = 900.0  # mean tokens per billed request
    token_cv: float = 0.8  # per request
    hit_rate: float = 0.25
    escalation: float = 0.03  # share of requests whose cascade escalates to the dear route
    errors: float = 0.01
    weekend: float = 0.35  # weekend traffic as a share of a weekday's
    night: float = 0.15  # the small hours as a share of the afternoon peak
    jitter: float = 0.08  # each key's rate varies this much from bucket to bucket (beyond Poisson)
    growth: float = 0.0  # per day, multiplicative (drift) ...
    growth_from: int = 0  # ... from this bucket on


@dataclass(frozen=True)
class Injection:
    """From bucket `start` for `length` buckets, `change` replaces the team's parameters, and
    `extra_key` (if set) adds that many requests per bucket from one key."""

    cause: str  # what the detector should rank first: "key", "route", "volume", ...
    value: str  # the cause's value ("" for the drivers)
    start: int
    length: int
    change: dict[str, object] = field(default_factory=dict)
    extra_key: tuple[str, float] | None = None


def seasonal(team: Team, n: int) -> float:
    """The team's request rate in bucket n: an office-hours day, quieter weekends."""
    start_s = n * BUCKET_S
    hour = (start_s % 86_400) / 3600
    weekday = (start_s // 86_400 + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    day = team.night + (1 - team.night) * math.exp(-(((hour - 14) / 4.5) ** 2))
    week = team.weekend if weekday >= 5 else 1.0
    growth = (1 + team.growth) ** (max(n - team.growth_from, 0) / DAY)
    return team.rate * day * week * growth


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 40:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n > 40:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(rng.random() < p for _ in range(n))


def bucket(
    team: Team, n: int, rng: random.Random, extra_key: tuple[str, float] | None = None
) -> dict[str, int]:
    fields: dict[str, float] = {}

    def add(name: str, amount: float) -> None:
        if amount:
            fields[name] = fields.get(name, 0) + amount

    rate = seasonal(team, n)
    keys = list(team.keys)
    counts: list[tuple[str, float]] = [(k, rate * w) for k, w in keys]
    if extra_key is not None:
        counts.append(extra_key)
    for key, key_rate in counts:
        jittered = key_rate * math.exp(rng.gauss(0, team.jitter))
        for route in team.routes:
            requests = poisson(rng, jittered * route.weight)
            if not requests:
                continue
            hits = binomial(rng, requests, team.hit_rate)
            billed = requests - hits
            # The sum of `billed` lognormal sizes: mean and spread of the sum.
            sigma = team.token_cv * team.tokens * math.sqrt(billed)
            tokens = max(0.0, rng.gauss(team.tokens * billed, sigma)) if billed else 0.0
            cost = tokens * route.nano_per_token
            escalated = binomial(rng, billed, team.escalation)
            extra = escalated * team.tokens * DEAR.nano_per_token
            errors = binomial(rng, requests, team.errors)
            route_value = join_parts(route.model, route.deployment)
            for series, value in ((SERIES_KEY, key), (SERIES_MODEL, route.model)):
                add(series_field(series, value, "cost"), cost + extra)
                add(series_field(series, value, "requests"), requests)
            add(series_field(SERIES_ROUTE, route_value, "cost"), cost)
            add(series_field(SERIES_ROUTE, route_value, "requests"), requests)
            for metric, amount in (
                ("cost", cost + extra),
                ("requests", requests),
                ("hits", hits),
                ("tokens", tokens),
                ("extra_cost", extra),
                ("errors", errors),
            ):
                add(series_field(SERIES_TEAM, "", metric), amount)
    return {name: round(value) for name, value in fields.items()}


def buckets(
    team: Team, first: int, stop: int, seed: int, injections: tuple[Injection, ...] = ()
) -> Iterator[tuple[int, dict[str, int]]]:
    rng = random.Random(seed)
    for n in range(first, stop):
        now, extra = team, None
        for inj in injections:
            if inj.start <= n < inj.start + inj.length:
                now = replace(now, **inj.change)  # type: ignore[arg-type]
                extra = inj.extra_key or extra
        yield n, bucket(now, n, rng, extra)


def history_of(team: Team, first: int, stop: int, seed: int, capacity: int = 6336) -> SeriesHistory:
    history = SeriesHistory(BUCKET_S, capacity)
    for n, fields in buckets(team, first, stop, seed):
        history.put(n, fields)
    return history


def weekday_afternoon(week: int, day: int, hour: int = 14) -> int:
    """Bucket number of `hour`:00 UTC on `day` (0 = Monday) of `week` (0 = the first)."""
    return FIRST + week * WEEK + day * DAY + hour * 12


def mean_cost(team: Team, n: int) -> float:
    """A bucket's expected cost (nano-USD), from the model that draws it: what an injection's
    excess is measured against."""
    rate = seasonal(team, n)
    billed = rate * (1 - team.hit_rate)
    per_token = sum(r.weight * r.nano_per_token for r in team.routes)
    first = billed * team.tokens * per_token
    extra = billed * team.escalation * team.tokens * DEAR.nano_per_token
    return first + extra


@dataclass
class Replay:
    """What a detector made of a history, bucket by bucket."""

    changes: list[tuple[int, Change]]  # (bucket, the change with the anomaly as it was then)
    history: SeriesHistory
    cpu_s: float = 0.0  # spent evaluating
    evaluated: int = 0  # buckets

    def events(self, event: str) -> list[tuple[int, Anomaly]]:
        return [(n, c.anomaly) for n, c in self.changes if c.event == event]


def replay(
    team: Team,
    first: int,
    stop: int,
    seed: int,
    injections: tuple[Injection, ...] = (),
    *,
    prefix: Iterable[tuple[int, dict[str, int]]] = (),
    config: AnomaliesConfig | None = None,
    suppress: Mapping[Pattern, str] | None = None,
) -> Replay:
    """Put `prefix` (buckets before `first`) in a history, then generate buckets first..stop-1
    (with the injections) and evaluate each as the aggregator would once it closed."""
    config = config or AnomaliesConfig()
    history = SeriesHistory(BUCKET_S, config.history_buckets)
    for n, fields in prefix:
        history.put(n, fields)
    detector = TeamDetector(team.name, history, config)
    state, open_anomalies = TeamState(), dict[str, Anomaly]()
    result = Replay([], history)
    for n, fields in buckets(team, first, stop, seed, injections):
        history.put(n, fields)
        started = time.process_time()
        found = detector.evaluate(n, state, open_anomalies, suppress or {}, (n + 1) * BUCKET_S + 1)
        result.cpu_s += time.process_time() - started
        result.evaluated += 1
        for change in found:  # the open anomaly goes on changing: keep it as it was
            snapshot = Anomaly.from_dict(change.anomaly.to_dict())
            result.changes.append((n, Change(change.event, snapshot)))
    return result
