"""The aggregator's Prometheus metrics, on a registry it is given (the gateway's, when the
aggregator runs embedded in `serve`) or its own. Labels are bounded: outcome, severity, and
team names, which come from the config and the stream registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_FORECAST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From an anomaly's first unusual bucket to its alert: a bucket or two (5 s .. 1 h buckets).
_LAG_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


class AggregatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "sg_aggregator_events_total",
            "Spend stream entries handled: applied to rollups, poison (dead-lettered), or stale "
            "(already applied by another consumer, skipped).",
            ["outcome"],
            registry=r,
        )
        self.batches = Counter(
            "sg_aggregator_batches_total", "Apply script calls that wrote a batch.", registry=r
        )
        self.reclaimed = Counter(
            "sg_aggregator_reclaimed_total",
            "Entries reclaimed from consumers idle longer than aggregator.claim_idle_s.",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "sg_aggregator_apply_seconds",
            "Time to apply one batch (summing plus the apply script).",
            buckets=_APPLY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "sg_aggregator_lag_events",
            "Entries of the team's spend stream not yet delivered to the aggregator group.",
            ["team"],
            registry=r,
        )
        self.pending = Gauge(
            "sg_aggregator_pending_events",
            "Entries delivered to an aggregator but not yet applied (acked).",
            ["team"],
            registry=r,
        )
        self.archived = Counter(
            "sg_aggregator_archived_events_total",
            "Entries written to the cold-tier archive.",
            registry=r,
        )
        self.trimmed = Counter(
            "sg_aggregator_trimmed_events_total",
            "Archived entries trimmed from the spend streams.",
            registry=r,
        )
        self.forecast_over = Gauge(
            "sg_budgets_forecast_over_limit",
            "Budgets of the team whose forecast spend at the end of their period is over their "
            "limit, at the last forecast run.",
            ["team"],
            registry=r,
        )
        self.forecast_seconds = Histogram(
            "sg_aggregator_forecast_seconds",
            "Time to forecast every budget once (reading rollups and counters, fitting).",
            buckets=_FORECAST_BUCKETS,
            registry=r,
        )
        self.anomalies_open = Gauge(
            "sg_anomalies_open",
            "Spend anomalies open (or escalated) now, by team and severity. Kept by the "
            "aggregator replica that runs detection; the others report none.",
            ["team", "severity"],
            registry=r,
        )
        self.detection_lag = Histogram(
            "sg_anomaly_detection_lag_seconds",
            "From the start of an anomaly's first unusual bucket to its opening.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.evaluated = Gauge(
            "sg_anomaly_last_evaluated_timestamp_seconds",
            "End of the last bucket anomaly detection evaluated (epoch seconds; 0 on the "
            "replicas not running detection).",
            registry=r,
        )
