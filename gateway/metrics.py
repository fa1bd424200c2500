"""Every Prometheus metric spendgate exports, defined once on an app-owned registry.

Labels are bounded: model names and teams come from the config (an unknown model is recorded as
"<unknown>"), providers and deployments too; never key ids, users or prompts.

Under `serve --workers N` each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, chosen when it is imported) and any worker's /metrics
merges them all; each gauge's `multiprocess_mode` says how (see docs/operations.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

# Gateway overhead is sub-millisecond when healthy; upstream latencies span ms to minutes.
_OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
)
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        """`multiprocess_dir`: the PROMETHEUS_MULTIPROC_DIR this process writes to, when it is
        one worker of several; `exposition` then reports every worker's values."""
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._series: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._request_series: dict[tuple[str, str, str, str, int], tuple[Any, Any, Any]] = {}
        self._before_collect: list[Callable[[], None]] = []
        # First in the registry: whatever reads it sees every request that has finished.
        self.registry.register(_BeforeCollect(self._before_collect))
        r = self.registry
        # With workers, python_info and each worker's process_* are added at each scrape
        # (`_WorkerProcesses`) instead.
        if multiprocess_dir is None:
            describe_process(r)
        self.requests = Counter(
            "sg_requests_total",
            "Requests answered, by endpoint, requested model, provider, team and HTTP status.",
            ["endpoint", "model", "provider", "team", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "sg_request_duration_seconds",
            "Total time from request received to response finished.",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_seconds = Histogram(
            "sg_gateway_overhead_seconds",
            "Time spent in the gateway itself (total minus time waiting on the upstream).",
            ["endpoint"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_ttfb_seconds = Histogram(
            "sg_upstream_ttfb_seconds",
            "Upstream time to first byte of the response.",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "sg_tokens_total",
            "Tokens consumed, by kind (prompt, cached_prompt, completion, reasoning).",
            ["team", "model", "kind"],
            registry=r,
        )
        self.cost_usd = Counter(
            "sg_cost_usd_total",
            "Spend in USD, by team and requested model.",
            ["team", "model"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "sg_upstream_errors_total",
            "Failed upstream attempts, by deployment and reason (status code, timeout, connect).",
            ["provider", "deployment", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "sg_upstream_retries_total",
            "Attempts beyond the first for one request (same or fallback deployment).",
            ["model"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "sg_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            registry=r,
            # Each worker has its own breakers: report the worst state a live worker sees.
            multiprocess_mode="livemax",
        )
        self.config_reloads = Counter(
            "sg_config_reloads_total",
            "Config reload attempts, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.http_bad_requests = Counter(
            "sg_http_bad_requests_total",
            "Requests the HTTP parser refused (answered 400, connection closed), by reason "
            "(bad_method, bad_request_line, line_too_long, bad_header, bad_url, bad_body, "
            "malformed).",
            ["reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "sg_inflight_requests",
            "Requests being served right now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Cost optimizers: cache, coalescing, batching, tiering, cascades, and what they saved.
        self.cache_lookups = Counter(
            "sg_cache_lookups_total",
            "Response cache lookups by result (hit, miss, bypass) and level (memory, redis; "
            "none for bypass). A request missing memory then hitting Redis counts at both levels.",
            ["result", "level"],
            registry=r,
        )
        self.cache_errors = Counter(
            "sg_cache_redis_errors_total",
            "Response cache Redis operations that failed (read, write, decode); served as misses.",
            ["operation"],
            registry=r,
        )
        self.cache_evictions = Counter(
            "sg_cache_redis_evictions_total",
            "Response cache entries evicted from Redis before their expiry to keep the level "
            "within cache.redis_max_bytes.",
            registry=r,
        )
        self.cache_memory_bytes = Gauge(
            "sg_cache_memory_bytes",
            "Bytes held by the in-process response cache (summed over workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.coalesced = Counter(
            "sg_coalesced_requests_total",
            "Requests answered by another identical request's upstream call (followers only).",
            ["model"],
            registry=r,
        )
        self.embedding_batch_requests = Histogram(
            "sg_embedding_batch_requests",
            "Client requests merged into one upstream embeddings call.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.embedding_batch_inputs = Histogram(
            "sg_embedding_batch_inputs",
            "Inputs sent in one upstream embeddings call.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=r,
        )
        self.tier_decisions = Counter(
            "sg_tier_decisions_total",
            "Tier routing decisions by tier, rule that fired (default when none) and model.",
            ["tier", "rule", "model"],
            registry=r,
        )
        self.cascade_escalations = Counter(
            "sg_cascade_escalations_total",
            "Cascade escalations to a better candidate, by tier and failed check.",
            ["tier", "check"],
            registry=r,
        )
        self.savings_usd = Counter(
            "sg_savings_usd_total",
            "List cost minus billed cost, in USD, by team and optimization "
            "(cache, tiering, cascade, coalescing, batching, downgrade).",
            ["team", "optimization"],
            registry=r,
        )
        # Budgets and the ledger.
        self.budget_refusals = Counter(
            "sg_budget_refusals_total",
            "Requests a budget refused (block) or sent to a cheaper model (downgrade).",
            ["team", "budget", "action"],
            registry=r,
        )
        # Rate limits.
        self.rate_limited = Counter(
            "sg_rate_limited_total",
            "Requests a rate limit refused (429), by what it counts per (key, team, model) "
            "and what it limits (requests, tokens).",
            ["scope", "kind"],
            registry=r,
        )
        self.alerts = alerts_counter(r)
        # Governance (gateway.policies): policy names come from the config.
        self.policy_decisions = Counter(
            "sg_policy_decisions_total",
            "Requests a policy acted on, by policy and action (block, warn, "
            "approval_required, approved, denied, unavailable).",
            ["policy", "action"],
            registry=r,
        )
        self.spool_bytes = Gauge(
            "sg_spool_bytes",
            "Spend events waiting in the local spool for Redis to come back.",
            registry=r,
            # Each worker spools in its own directory; a restarted worker takes over its slot's.
            multiprocess_mode="livesum",
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per series (labels() takes a lock and
        builds tuples on every call). Only for label values the config bounds (models, teams,
        providers, fixed kinds), never for values a client sends."""
        key = (metric, labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    def request_series(
        self, endpoint: str, model: str, provider: str, team: str, status: int
    ) -> tuple[Any, Any, Any]:
        """The series every answered request updates (sg_requests_total, its duration and the
        gateway's overhead), looked up once per label set. Labels as for `child`."""
        key = (endpoint, model, provider, team, status)
        found = self._request_series.get(key)
        if found is None:
            found = self._request_series[key] = (
                self.child(self.requests, endpoint, model, provider, team, str(status)),
                self.child(self.request_seconds, endpoint, model),
                self.child(self.overhead_seconds, endpoint),
            )
        return found

    def before_collect(self, hook: Callable[[], None]) -> None:
        """Call `hook` whenever the metrics are read (it records what is pending)."""
        self._before_collect.append(hook)

    def exposition(self, extra: bytes = b"") -> bytes:
        """The text format: this registry, or with workers every worker's merged values (read
        afresh from their files on each call). `extra`: another process's exposition (the local
        store's aggregator) merged in; a family both have (sg_alerts_total) is one family."""
        if self.multiprocess_dir is None:
            source: CollectorRegistry = self.registry  # which runs the hooks
        else:
            for hook in self._before_collect:  # what this worker writes to its files
                hook()
            source = CollectorRegistry()
            MultiProcessCollector(source, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            PlatformCollector(registry=source)
            source.register(_WorkerProcesses(self.multiprocess_dir))
        if not extra:
            return generate_latest(source)
        return generate_latest(_Families(_merged(source.collect(), extra)))


class _BeforeCollect:
    """A collector of no metrics that calls hooks when the registry is collected."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def collect(self) -> list[Metric]:
        for hook in self._hooks:
            hook()
        return []


class _WorkerProcesses:
    """process_* of every live worker, each series labelled with its `pid`: a ProcessCollector
    reads one process, and multiprocess mode has no way to merge what several read. A worker is
    live while its file of live-summed gauges is in the metrics directory (the supervisor
    removes it when the worker dies) and its process exists."""

    _LIVE = re.compile(r"^gauge_livesum_(\d+)\.db$")

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> list[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._pids():
            for family in ProcessCollector(pid=_returning(pid), registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    merged.samples.append(sample._replace(labels={**sample.labels, "pid": pid}))
        return list(families.values())

    def _pids(self) -> list[str]:
        try:
            names = os.listdir(self._directory)
        except OSError:
            return []
        found = (m.group(1) for name in names if (m := self._LIVE.match(name)) is not None)
        return sorted((pid for pid in found if os.path.exists(f"/proc/{pid}")), key=int)


def _returning(value: str) -> Callable[[], str]:
    return lambda: value


class _Families:
    """A fixed list of metric families, in the shape `generate_latest` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _merged(ours: Iterable[Metric], theirs: bytes) -> list[Metric]:
    """Our families plus those of another process's exposition; a series both have is
    summed (a counter two processes count in), a family both have keeps one header. Their
    `_created` timestamps are left out: the text format gives them families of their own,
    which would repeat ours."""
    families = {family.name: family for family in ours}
    for other in text_string_to_metric_families(theirs.decode("utf-8", "replace")):
        other.samples = [s for s in other.samples if not s.name.endswith("_created")]
        if not other.samples:
            continue
        mine = families.get(other.name)
        if mine is None:
            families[other.name] = other
            continue
        index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(mine.samples)}
        for sample in other.samples:
            at = index.get((sample.name, tuple(sorted(sample.labels.items()))))
            if at is None:
                mine.samples.append(sample)
            else:
                mine.samples[at] = mine.samples[at]._replace(
                    value=mine.samples[at].value + sample.value
                )
    return list(families.values())


def describe_process(registry: CollectorRegistry) -> None:
    """What every Prometheus client exports on its default registry, on `registry`: this
    process's process_* (resident memory, CPU, file descriptors, start time), python_info and
    the garbage collector's python_gc_*."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def alerts_counter(registry: CollectorRegistry) -> Counter:
    """Alerts sent: the gateway's, and those of `spendgate aggregate` on its own registry."""
    return Counter(
        "sg_alerts_total",
        "Alerts by kind and outcome (sent, suppressed by cooldown, webhook_failed).",
        ["kind", "outcome"],
        registry=registry,
    )
