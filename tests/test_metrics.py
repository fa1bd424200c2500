"""Metrics.child: a series looked up once and then reused, counting into the same exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics


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
