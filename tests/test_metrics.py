"""Metrics.child: a series looked up once and then reused, counting into the same exposition."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.aggregator.metrics import AggregatorMetrics
from gateway.metrics import Metrics, alerts_counter


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {name}{labels}")


def test_a_series_is_looked_up_once_and_counts_like_labels() -> None:
    m = Metrics()
    first = m.child(m.tokens, "alpha", "gpt-4o", "prompt")
    assert m.child(m.tokens, "alpha", "gpt-4o", "prompt") is first
    assert m.child(m.tokens, "alpha", "gpt-4o", "completion") is not first
    first.inc(3)
    m.tokens.labels("alpha", "gpt-4o", "prompt").inc(4)  # the same series either way
    m.child(m.cost_usd, "alpha", "gpt-4o").inc(0.5)
    labels = {"team": "alpha", "model": "gpt-4o"}
    assert sample(m, "sg_tokens_total", {**labels, "kind": "prompt"}) == 7
    assert sample(m, "sg_cost_usd_total", labels) == 0.5


def test_another_process_exposition_is_merged_in_one_family_per_name() -> None:
    """The local store's aggregator (a child process) serves its own metrics; the gateway's
    /metrics merges them in: its families appear, a counter both count in (sg_alerts_total)
    is one family whose common series are summed, and the result parses."""
    gateway = Metrics()
    gateway.alerts.labels("budget", "sent").inc(2)
    gateway.alerts.labels("anomaly", "sent").inc(1)
    child = AggregatorMetrics()
    alerts_counter(child.registry).labels("anomaly", "sent").inc(5)
    child.events.labels("applied").inc(7)
    child.apply_seconds.observe(0.003)

    text = gateway.exposition(generate_latest(child.registry)).decode()

    headers = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(headers) == len(set(headers))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sg_alerts_total", (("kind", "budget"), ("outcome", "sent")))] == 2
    assert samples[("sg_alerts_total", (("kind", "anomaly"), ("outcome", "sent")))] == 6
    assert samples[("sg_aggregator_events_total", (("outcome", "applied"),))] == 7
    assert samples[("sg_aggregator_apply_seconds_count", ())] == 1
    assert gateway.exposition(b"") == generate_latest(gateway.registry)
