"""Every Prometheus metric spendgate exports, defined once on an app-owned registry.

Labels are bounded: model names and teams come from the config (an unknown model is recorded as
"<unknown>"), providers and deployments too; never key ids, users or prompts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        )
        self.config_reloads = Counter(
            "sg_config_reloads_total",
            "Config reload attempts, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.inflight = Gauge(
            "sg_inflight_requests",
            "Requests being served right now.",
            registry=r,
        )
