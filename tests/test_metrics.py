"""Metrics.child: a series looked up once and then reused, counting into the same exposition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.mmap_dict import MmapedDict
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
    # Nothing merged in: the registry's own text, but for the process's live figures (CPU
    # seconds, memory, collections), which move between two reads.
    assert _steady(gateway.exposition(b"")) == _steady(generate_latest(gateway.registry))


def _steady(text: bytes) -> list[str]:
    live = ("process_", "python_gc_")
    return [
        line
        for line in text.decode().splitlines()
        if not line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(live)
    ]


def families_of(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        family.name: [(s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def own_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def test_the_process_is_described_as_every_prometheus_client_does() -> None:
    # process_* read this process's /proc, python_info its interpreter, python_gc_* its
    # collector: what an exporter on the default registry shows, on the gateway's own one.
    families = families_of(Metrics().exposition().decode())
    ((labels, rss),) = families["process_resident_memory_bytes"]
    assert labels == {}
    assert 0.5 * own_rss_bytes() < rss < 2 * own_rss_bytes()
    ((_, started),) = families["process_start_time_seconds"]
    assert started <= time.time()
    assert families["process_cpu_seconds"][0][1] > 0
    ((info, one),) = families["python_info"]
    assert one == 1 and info["major"] == str(sys.version_info.major)
    assert {labels["generation"] for labels, _ in families["python_gc_objects_collected"]} == {
        "0",
        "1",
        "2",
    }


def test_with_workers_each_live_workers_process_is_reported_by_its_pid(tmp_path: Path) -> None:
    # In multiprocess mode a worker is live while its live-summed gauges' file exists (the
    # supervisor deletes it when the worker dies): each such process's process_* series are
    # reported with its pid; a dead one's leftover file, and other files, are not read.
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        names = [f"gauge_livesum_{pid}.db" for pid in (os.getpid(), alive.pid, dead.pid)]
        for name in [*names, "counter_1.db", "gauge_livesum_notapid.db"]:
            MmapedDict(str(tmp_path / name)).close()  # an empty values file, as a worker's
        families = families_of(Metrics(multiprocess_dir=str(tmp_path)).exposition().decode())
    finally:
        alive.kill()
        alive.wait()
    rss = {labels["pid"]: value for labels, value in families["process_resident_memory_bytes"]}
    assert set(rss) == {str(os.getpid()), str(alive.pid)}
    assert 0.5 * own_rss_bytes() < rss[str(os.getpid())] < 2 * own_rss_bytes()
    assert 0 < rss[str(alive.pid)] < rss[str(os.getpid())]  # a sleeping interpreter: smaller
    starts = {labels["pid"] for labels, _ in families["process_start_time_seconds"]}
    assert starts == set(rss)
    assert "python_info" in families
    assert "python_gc_objects_collected" not in families  # the scraping worker's alone: left out
