"""What one spend event adds to the rollups: pure functions, no I/O.

The rollups' shape (dimensions, metric names, how fields and combined values are encoded) is
`gateway.rollupformat`, which the readers (analytics, reports) share without importing this.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from gateway import rediskeys
from gateway.rollupformat import (
    DAILY,
    DIMENSIONS,
    HOURLY,
    HOURLY_DIMENSIONS,
    LINE_CACHE,
    LINE_EXTERNAL,
    LINE_METRICS,
    LINE_USAGE,
    MAX_LINE_TAGS,
    MISSING,
    SAVINGS_PREFIX,
    SERIES_KEY,
    SERIES_MODEL,
    SERIES_ROUTE,
    SERIES_TEAM,
    SHORT_COMPLETION_TOKENS,
    SHORT_PROMPT_TOKENS,
    SIGNAL_COUNT,
    SIGNAL_FINGERPRINT,
    SIGNAL_PREFIX,
    SIGNAL_ROUTE,
    hour_bucket,
    join_parts,
    price_text,
    series_field,
    signal_sampled,
)
from gateway.slices import NO_SLICES, Slices
from gateway.types import SpendEvent

if TYPE_CHECKING:
    from gateway.aggregator.prices import PriceList
    from gateway.config.model import AnomaliesConfig
    from gateway.pricing.price import Price

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_TTL_S = {HOURLY: rediskeys.ROLLUP_HOURLY_TTL_S, DAILY: rediskeys.ROLLUP_DAILY_TTL_S}
_SIGNAL_TTL_S = rediskeys.ROLLUP_SIGNAL_TTL_S
_BUCKET_MS = {HOURLY: _HOUR_MS, DAILY: _DAY_MS}


def increments(event: SpendEvent, prices: PriceList | None = None) -> list[tuple[str, str, int]]:
    """(rollup key, hash field, amount) for every non-zero sum the event contributes to; its
    FOCUS line priced from `prices` (unpriced without)."""
    return [
        (rediskeys.rollup(event.team, granularity, bucket, dimension), f, amount)
        for granularity, bucket, dimension, f, amount in _cells(event, prices)
    ]


def expire_at(granularity: str, bucket_start_ms: int) -> int:
    """Epoch seconds at which a rollup key is dropped: its TTL after its bucket closes. Absolute,
    so late events never extend a bucket's life and replaying old events cannot resurrect it."""
    return (bucket_start_ms + _BUCKET_MS[granularity]) // 1000 + _TTL_S[granularity]


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """The fine buckets anomaly detection reads: their size, and how long each is kept."""

    bucket_s: int
    keep_s: int  # after the bucket's end

    @classmethod
    def from_config(cls, config: AnomaliesConfig) -> SeriesSpec | None:
        if not config.enabled:
            return None
        return cls(config.bucket_s, config.history_buckets * config.bucket_s)


# What `RollupBatch` has yet to spread: team, hour, a ts_ms of that hour, the values of every
# dimension, the summed metrics.
_Pending = tuple[str, str, int, Mapping[str, tuple[str, ...]], dict[str, int]]


@dataclass(slots=True)
class RollupBatch:
    """The summed increments of many events, per key, with each key's absolute expiry: what
    one apply script call writes. Same sums as `increments`, built without the tuples, plus
    the fine buckets of anomaly detection when `series` is given.

    Events of one hour with the same values in every dimension (one key's traffic to one
    model, usually most of a batch) add to the same hash fields: their metrics are summed
    first and spread over the fields once, when `cells` or `items()` is read."""

    prices: PriceList | None = None  # to price the FOCUS lines
    series: SeriesSpec | None = None
    slices: Slices = NO_SLICES  # the aggregator's process gives its core way while it spreads
    _cells: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> field -> amount
    _expiry: dict[str, int] = field(default_factory=dict)  # key -> epoch s
    # (hour, `_alike`) of requests, (team, hour, the values of every dimension) of external
    # costs -> what is still to be spread over the rollup keys' fields: team, hour, a ts_ms of
    # that hour, the values, the summed metrics
    _pending: dict[tuple[object, ...], _Pending] = field(default_factory=dict, repr=False)
    # (team, granularity, bucket) -> dimension -> the sums of its key
    _buckets: dict[tuple[str, str, str], dict[str, dict[str, int]]] = field(
        default_factory=dict, repr=False
    )
    # (deployment, model) -> its line prices, formatted once per batch
    _price_texts: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict, repr=False)
    # `_alike` of a request -> its values in every dimension, worked out once per batch
    _values: dict[tuple[object, ...], Mapping[str, tuple[str, ...]]] = field(
        default_factory=dict, repr=False
    )
    # (team, day, signal dimension) -> the sums of its key
    _signal_sums: dict[tuple[str, str, str], dict[str, int]] = field(
        default_factory=dict, repr=False
    )
    # (key, requested model, deployment) -> its fine-bucket field names, once per batch
    _series_names: dict[tuple[str, str, str], tuple[str, ...]] = field(
        default_factory=dict, repr=False
    )

    @property
    def cells(self) -> dict[str, dict[str, int]]:
        """key -> hash field -> amount, every event added so far included."""
        self._spread()
        return self._cells

    @property
    def expiry(self) -> dict[str, int]:
        """key -> the epoch second it expires at."""
        self._spread()
        return self._expiry

    def add(self, event: SpendEvent) -> None:
        metrics = _metrics(event)
        if not metrics:
            return
        hour = hour_bucket(event.ts_ms)
        alike = _alike(event)
        if alike is None:
            values = _values(event, self.prices, self._price_texts)
            ident: tuple[object, ...] = (event.team, hour, *values.values())
        else:
            found = self._values.get(alike)
            if found is None:
                found = self._values[alike] = _values(event, self.prices, self._price_texts)
            values = found
            ident = (hour, alike)
        pending = self._pending.get(ident)
        if pending is None:
            self._pending[ident] = (event.team, hour, event.ts_ms, values, dict(metrics))
        else:
            sums = pending[4]
            for metric, amount in metrics:
                sums[metric] = sums.get(metric, 0) + amount
        # Requests only: a posted cost is not traffic, and an imported FOCUS row is a day's
        # total with no time of day (imported archive files hold requests, and count).
        if self.series is not None and event.kind == "request":
            self._add_series(event, self.series)
        if event.fingerprint is not None:
            self._add_signals(event, hour[:8])

    def _spread(self) -> None:
        """Add the pending sums to the fields of every rollup key they belong to."""
        give_way = self.slices.give_way
        for team, hour, ts_ms, values, sums in self._pending.values():
            metrics = list(sums.items())
            line_metrics = [(m, a) for m, a in metrics if m in LINE_METRICS]
            hourly = self._sums(team, ts_ms, HOURLY, hour, HOURLY_DIMENSIONS)
            daily = self._sums(team, ts_ms, DAILY, hour[:8], DIMENSIONS)
            for dimension in DIMENSIONS:
                give_way()
                day_sums = daily[dimension]
                hour_sums = hourly.get(dimension)
                for value in values[dimension]:
                    prefix = value + "|"
                    for metric, amount in line_metrics if dimension == "line" else metrics:
                        hash_field = prefix + metric
                        day_sums[hash_field] = day_sums.get(hash_field, 0) + amount
                        if hour_sums is not None:
                            hour_sums[hash_field] = hour_sums.get(hash_field, 0) + amount
        self._pending.clear()

    def _add_signals(self, event: SpendEvent, day: str) -> None:
        for dimension, hash_field, amount in signal_cells(event):
            ident = (event.team, day, dimension)
            sums = self._signal_sums.get(ident)
            if sums is None:
                key = rediskeys.rollup(event.team, DAILY, day, dimension)
                sums = self._signal_sums[ident] = self._cells[key] = {}
                start = event.ts_ms - event.ts_ms % _DAY_MS
                self._expiry[key] = (start + _DAY_MS) // 1000 + _SIGNAL_TTL_S
            sums[hash_field] = sums.get(hash_field, 0) + amount

    def items(self) -> list[tuple[str, dict[str, int]]]:
        """(key, field -> amount) of every key with something to add."""
        return [(key, sums) for key, sums in self.cells.items() if sums]

    def __len__(self) -> int:
        return sum(len(c) for c in self.cells.values())

    def _add_series(self, e: SpendEvent, spec: SeriesSpec) -> None:
        start = e.ts_ms // 1000 // spec.bucket_s * spec.bucket_s
        key = rediskeys.anomaly_series(e.team, spec.bucket_s, start)
        sums = self._cells.get(key)
        if sums is None:
            sums = self._cells[key] = {}
            self._expiry[key] = start + spec.bucket_s + spec.keep_s
        # A request's later calls (a cascade's escalations, "<request id>:<n>") are extra cost,
        # not more requests; a route is where requests went first, so they are not its cost.
        first = not (e.request_id and e.event_id.startswith(e.request_id + ":"))
        cost = e.cost_nano
        ident = (e.key_id, e.requested_model, e.deployment)
        names = self._series_names.get(ident)
        if names is None:
            names = self._series_names[ident] = _part_fields(*ident)
        key_cost, key_requests, model_cost, model_requests, route_cost, route_requests = names
        added = [(_TEAM_COST, cost), (key_cost, cost), (model_cost, cost)]
        if first:
            added += [(_TEAM_REQUESTS, 1), (key_requests, 1), (model_requests, 1)]
            added += [(route_cost, cost), (route_requests, 1)]
            if e.cache == "hit":
                added.append((_TEAM_HITS, 1))
            else:
                added.append((_TEAM_TOKENS, e.prompt_tokens + e.completion_tokens))
            if e.status >= 400 or e.outcome != "ok":
                added.append((_TEAM_ERRORS, 1))
        else:
            added.append((_TEAM_EXTRA, cost))
        for hash_field, amount in added:
            if amount:
                sums[hash_field] = sums.get(hash_field, 0) + amount

    def _sums(
        self, team: str, ts_ms: int, granularity: str, bucket: str, dimensions: tuple[str, ...]
    ) -> dict[str, dict[str, int]]:
        ident = (team, granularity, bucket)
        found = self._buckets.get(ident)
        if found is None:
            start = ts_ms - ts_ms % _BUCKET_MS[granularity]
            found = self._buckets[ident] = {}
            for dimension in dimensions:
                key = rediskeys.rollup(team, granularity, bucket, dimension)
                found[dimension] = self._cells.setdefault(key, {})
                self._expiry[key] = expire_at(granularity, start)
        return found


_TEAM_COST, _TEAM_REQUESTS, _TEAM_HITS, _TEAM_TOKENS, _TEAM_EXTRA, _TEAM_ERRORS = (
    series_field(SERIES_TEAM, "", metric)
    for metric in ("cost", "requests", "hits", "tokens", "extra_cost", "errors")
)


def signal_cells(e: SpendEvent) -> list[tuple[str, str, int]]:
    """(dimension, hash field, amount) the event adds to the recommendations' signal rollups
    (`rollupformat.SIGNAL_DIMENSIONS`): none unless it is a request that succeeded and carries
    the gateway's signals."""
    if e.fingerprint is None or e.kind != "request" or e.status >= 400 or e.outcome != "ok":
        return []
    model = e.requested_model or MISSING
    prefix = model + "|"
    hit = e.cache == "hit"
    cells: list[tuple[str, str, int]] = []
    if not hit:
        cells.append((SIGNAL_ROUTE, prefix + "miss_cost", e.cost_nano))
    if e.request_id and e.event_id.startswith(e.request_id + ":"):
        return [c for c in cells if c[2]]  # a request's later call: its cost only
    cells.append((SIGNAL_ROUTE, prefix + "requests", 1))
    if hit:
        cells.append((SIGNAL_ROUTE, prefix + "hits", 1))
    if signal_sampled(e.fingerprint):
        cells.append((SIGNAL_FINGERPRINT, f"{join_parts(model, e.fingerprint)}|{SIGNAL_COUNT}", 1))
    if hit:
        return [c for c in cells if c[2]]
    if (
        e.shape == "simple"
        and e.prompt_tokens <= SHORT_PROMPT_TOKENS
        and e.completion_tokens <= SHORT_COMPLETION_TOKENS
    ):
        cells += [
            (SIGNAL_ROUTE, prefix + "short", 1),
            (SIGNAL_ROUTE, prefix + "short_prompt", e.prompt_tokens),
            (SIGNAL_ROUTE, prefix + "short_cached", e.cached_prompt_tokens),
            (SIGNAL_ROUTE, prefix + "short_completion", e.completion_tokens),
            (SIGNAL_ROUTE, prefix + "short_reasoning", e.reasoning_tokens),
            (SIGNAL_ROUTE, prefix + "short_cost", e.cost_nano),
        ]
    if e.prefix is not None:
        cells.append((SIGNAL_ROUTE, prefix + "long", 1))
        cells.append((SIGNAL_ROUTE, prefix + "long_cached", e.cached_prompt_tokens))
        if signal_sampled(e.prefix):
            cells.append((SIGNAL_PREFIX, f"{join_parts(model, e.prefix)}|{SIGNAL_COUNT}", 1))
    return [c for c in cells if c[2]]


def _part_fields(key_id: str, model: str, deployment: str) -> tuple[str, ...]:
    """(key, model, route) x (cost, requests) field names of one request's identity."""
    model = model or MISSING
    route = join_parts(model, deployment or MISSING)
    values = ((SERIES_KEY, key_id or MISSING), (SERIES_MODEL, model), (SERIES_ROUTE, route))
    return tuple(
        series_field(series, value, metric)
        for series, value in values
        for metric in ("cost", "requests")
    )


def _cells(event: SpendEvent, prices: PriceList | None) -> Iterator[tuple[str, str, str, str, int]]:
    metrics = _metrics(event)
    if not metrics:
        return
    values = _values(event, prices)
    hour = hour_bucket(event.ts_ms)
    line_metrics = [(m, a) for m, a in metrics if m in LINE_METRICS]
    for granularity, bucket, dimensions in (
        (HOURLY, hour, HOURLY_DIMENSIONS),
        (DAILY, hour[:8], DIMENSIONS),
    ):
        for dimension in dimensions:
            for value in values[dimension]:
                prefix = value + "|"
                for metric, amount in line_metrics if dimension == "line" else metrics:
                    yield granularity, bucket, dimension, prefix + metric, amount
    for dimension, hash_field, amount in signal_cells(event):
        yield DAILY, hour[:8], dimension, hash_field, amount


def _metrics(e: SpendEvent) -> list[tuple[str, int]]:
    is_request = e.kind != "external"
    count = 1 if e.units is None else e.units  # an imported row may stand for many
    savings = max(e.list_cost_nano - e.cost_nano, 0)
    candidates: list[tuple[str, int]] = [
        ("cost", e.cost_nano),
        ("list_cost", e.list_cost_nano),
        ("savings", savings),
        ("prompt", e.prompt_tokens),
        ("cached_prompt", e.cached_prompt_tokens),
        ("completion", e.completion_tokens),
        ("reasoning", e.reasoning_tokens),
        ("requests", count if is_request else 0),
        ("errors", count if is_request and (e.status >= 400 or e.outcome != "ok") else 0),
        ("cache_hits", count if e.cache == "hit" else 0),
        ("external", 0 if is_request else e.cost_nano),
        ("external_count", 0 if is_request else count),
    ]
    if e.revenue_nano is not None:
        candidates.append(("revenue", e.revenue_nano))
        candidates.append(("revenue_requests", count if is_request else 0))
    if e.optimization and savings:
        candidates.append((SAVINGS_PREFIX + join_parts(e.optimization), savings))
    return [(m, a) for m, a in candidates if a]


def _alike(e: SpendEvent) -> tuple[object, ...] | None:
    """What a request's `_values` are made of: requests equal in it have the same values in
    every dimension, their FOCUS line included. None for an external cost (its line carries
    its amount and description) and for tags that cannot be compared so (a value that is a
    list or an object, from a foreign writer)."""
    if e.kind == "external":
        return None
    tags = tuple(e.tags.items())
    try:
        hash(tags)
    except TypeError:
        return None
    return (
        e.team,
        e.project,
        e.environment,
        e.workload,
        e.requested_model,
        e.served_model,
        e.deployment,
        e.provider,
        e.key_id,
        tags,
        e.cache == "hit",
        not (e.cost_nano or e.prompt_tokens or e.completion_tokens),
    )


def _values(
    e: SpendEvent,
    prices: PriceList | None,
    memo: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> Mapping[str, tuple[str, ...]]:
    project = e.project or MISSING
    model = e.requested_model or MISSING
    return {
        "team": (e.team,),
        "project": (project,),
        "environment": (e.environment or MISSING,),
        "workload": (e.workload or MISSING,),
        "model": (model,),
        "served_model": (e.served_model or MISSING,),
        "deployment": (e.deployment or MISSING,),
        "provider": (e.provider or MISSING,),
        "key": (e.key_id or MISSING,),
        "tag": tuple(f"{k}={v}" for k, v in sorted(e.tags.items())),
        "project_model": (join_parts(project, model),),
        "line": _line(e, prices, memo),
    }


def _line(
    e: SpendEvent,
    prices: PriceList | None,
    memo: dict[tuple[str, str], tuple[str, str]] | None,
) -> tuple[str, ...]:
    """The event's FOCUS line, or none when it is no charge (nothing consumed, nothing billed)."""
    list_prices = contracted_prices = charge = amount = description = MISSING
    provider = e.provider or MISSING
    if e.kind == "external":
        kind = LINE_EXTERNAL
        charge = e.charge or MISSING
        # Identical posts share a line, which keeps the amount of one (an imported row of
        # several carries their total).
        amount = str(e.cost_nano // e.units if e.units else e.cost_nano)
        description = e.description or MISSING
    elif e.cache == "hit":
        kind = LINE_CACHE
        provider = MISSING  # the response cache: spendgate's own service, not a provider
    elif e.cost_nano or e.prompt_tokens or e.completion_tokens:
        kind = LINE_USAGE
        key = (e.deployment, e.served_model)
        texts = memo.get(key) if memo is not None else None
        if texts is None:
            sku = prices.get(*key) if prices is not None else None
            texts = (MISSING, MISSING) if sku is None else _sku_texts(sku.list, sku.contracted)
            if memo is not None:
                memo[key] = texts
        list_prices, contracted_prices = texts
    else:
        return ()
    return (
        join_parts(
            kind,
            e.project or MISSING,
            e.environment or MISSING,
            e.workload or MISSING,
            _tags_text(e.tags),
            provider,
            e.deployment or MISSING,
            e.served_model or MISSING,
            e.requested_model or MISSING,
            list_prices,
            contracted_prices,
            charge,
            amount,
            description,
        ),
    )


def _sku_texts(listed: Price, contracted: Price) -> tuple[str, str]:
    text = price_text(_per_direction(listed))
    return text, "=" if contracted == listed else price_text(_per_direction(contracted))


def _per_direction(p: Price) -> tuple[int, int, int, int]:
    return (p.input_per_m, p.cached_input_per_m, p.output_per_m, p.reasoning_per_m)


def _tags_text(tags: Mapping[str, str]) -> str:
    if not tags:
        return MISSING
    return orjson.dumps(dict(sorted(tags.items())[:MAX_LINE_TAGS])).decode()
