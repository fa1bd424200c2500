"""Every metric and label the alert rules and the Grafana dashboards use is one that a running
gateway and a running `spendgate aggregate --metrics-port` export: both are started here on the
compose setup's own config (deploy/compose/config/gateway.yaml) against a real Redis, driven
through real sockets, and scraped. A renamed metric or label fails here, and so does a legend
or an alert text naming a label its query does not keep."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.aggregator.metrics import AggregatorMetrics
from gateway.app.state import METRICS
from gateway.providers.mock import MockUpstream
from tests.clock import RunningClock
from tests.deploy.artifacts import COMPOSE_CONFIG, OPERATIONS, Query, alert_rules, queries
from tests.deploy.promql import SYNTHETIC, grafana_to_promql, result_labels, usage
from tests.ledger import db_url

DEPLOY_DB = 4  # the real-Redis database of these tests
# The compose config's defaults (deploy/compose/config/gateway.yaml), as a client uses them.
ADMIN_KEY = "sk-sg-admin-compose-change-me"
KEYS = {"search": "sk-sg-compose-search-key-0001", "support": "sk-sg-compose-support-key-0001"}
Exported = dict[str, frozenset[str]]


@dataclass
class Scrapes:
    gateway: Exported
    aggregator: Exported
    families: set[str]  # every family name either exports (counters without _total)


def exported(text: str) -> tuple[Exported, dict[str, set[str]]]:
    """Series name -> labels seen, as PromQL names them (counters with _total, histograms as
    _bucket/_count/_sum), and family name -> its series names."""
    labels: dict[str, set[str]] = {}
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = {
            "counter": [f"{family.name}_total"],
            "histogram": [f"{family.name}_{s}" for s in ("bucket", "count", "sum")],
        }.get(family.type, [family.name])
        series[family.name] = set(names)
        for name in names:
            labels.setdefault(name, set())
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {k: frozenset(v) for k, v in labels.items()}, series


def declared(registry: CollectorRegistry) -> Exported:
    """The label names of a registry's metrics, including those not yet set (prometheus_client
    prints a labelled metric's labels only with its samples): the running gateway's, and the
    aggregator's (`AggregatorMetrics`, what `spendgate aggregate` registers), whose open
    anomalies and forecast gauges have no sample until there is something to report."""
    found: dict[str, frozenset[str]] = {}
    for collector in list(registry._collector_to_names):
        names = getattr(collector, "_labelnames", None)
        if names is None:
            continue
        kind, base = collector._type, collector._name  # type: ignore[attr-defined]
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(kind, [""]):
            extra = {"le"} if suffix == "_bucket" else set()
            found[base + suffix] = frozenset(names) | extra
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def compose_env(
    real_redis_url: str,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    env = {
        "SPENDGATE_STORE_URL": db_url(real_redis_url, DEPLOY_DB),
        "SPENDGATE_UPSTREAM_URL": mock_upstream.base_url,
    }
    for name in ("SPENDGATE_ADMIN_KEY", "SPENDGATE_SEARCH_KEY", "SPENDGATE_SUPPORT_KEY"):
        monkeypatch.delenv(name, raising=False)  # the config's defaults
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # the config's relative spool and archive folders land here
    yield env
    import redis

    redis.Redis.from_url(env["SPENDGATE_STORE_URL"]).flushdb()


@pytest.fixture
async def gateway(compose_env: dict[str, str]) -> AsyncIterator[TestServer]:
    from gateway.app.server import create_app
    from gateway.config.loader import load_config

    app = create_app(load_config(COMPOSE_CONFIG), str(COMPOSE_CONFIG), clock=RunningClock())
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def aggregator(compose_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`spendgate aggregate` as compose runs it (its flags), on a free metrics port."""
    port = free_port()
    flags = ["--config", str(COMPOSE_CONFIG), "--metrics-port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "aggregate", *flags, "--metrics-host", "127.0.0.1"],
        env={**os.environ, **compose_env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0, stderr.decode()


async def drive(http: aiohttp.ClientSession, url: str, mock: MockUpstream) -> None:
    """Traffic that makes the gateway write a sample of each metric the queries use."""

    async def chat(team: str, model: str, **body: object) -> int:
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
        headers = {"Authorization": f"Bearer {KEYS[team]}"}
        async with http.post(f"{url}/v1/chat/completions", json=payload, headers=headers) as r:
            await r.read()
            return r.status

    assert await chat("search", "gpt-4o-mini", temperature=0) == 200
    assert await chat("search", "gpt-4o-mini", temperature=0) == 200  # a cache hit: savings
    assert await chat("support", "auto") == 200  # a tier decision
    assert await chat("support", "gpt-4o", stream=True) == 200
    embedding = {"model": "text-embedding-3-small", "input": "hi"}
    headers = {"Authorization": f"Bearer {KEYS['support']}"}
    async with http.post(f"{url}/v1/embeddings", json=embedding, headers=headers) as r:
        assert r.status == 200
    # A budget that is spent at once: threshold alerts, then a block refusal.
    tiny = {"team": "search", "period": "daily", "limit_usd": "0.000001"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.put(f"{url}/admin/budgets/search-tiny", json=tiny, headers=admin) as r:
        assert r.status == 201, await r.text()
    assert await chat("search", "gpt-4o") == 429
    # An upstream that fails: errors, retries, and an open circuit.
    mock.inject(status=502, model="gpt-4o", times=100)
    statuses = [await chat("support", "gpt-4o") for _ in range(8)]
    assert set(statuses) <= {502, 503} and 503 in statuses


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200
        return await response.text()


@pytest.fixture
async def scrapes(gateway: TestServer, aggregator: str, mock_upstream: MockUpstream) -> Scrapes:
    from gateway.app.state import LIVE_CONFIG, PIPELINE

    url = str(gateway.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        await drive(http, url, mock_upstream)
        assert gateway.app[LIVE_CONFIG].reload()
        await gateway.app[PIPELINE].accountant.drain()
        agg_text = ""
        for _ in range(200):  # until the aggregator has applied the gateway's events
            try:
                agg_text = await scrape(http, aggregator)
            except aiohttp.ClientConnectionError:
                agg_text = ""
            if re.search(r'^sg_aggregator_events_total\{outcome="applied"\} [1-9]', agg_text, re.M):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the aggregator applied no event:\n{agg_text}")
        gw_text = await scrape(http, f"{url}/metrics")
    gw, gw_series = exported(gw_text)
    for name, labels in declared(gateway.app[METRICS].registry).items():
        gw[name] = gw.get(name, frozenset()) | labels
    agg, agg_series = exported(agg_text)
    for name, labels in declared(AggregatorMetrics().registry).items():
        assert name in agg, f"the aggregator does not export {name}"
        agg[name] = agg[name] | labels
    return Scrapes(gw, agg, set(gw_series) | set(agg_series))


def exporter(name: str, scrapes: Scrapes) -> Exported:
    """Where a metric must come from: the aggregator's own port for the aggregator's metrics
    (sg_aggregator_*, anomaly detection, budget forecasts: those of `AggregatorMetrics`), the
    gateway's /metrics for the rest (the compose gateways do not run the aggregator)."""
    if name in SYNTHETIC:
        return SYNTHETIC
    return scrapes.aggregator if name in declared(AggregatorMetrics().registry) else scrapes.gateway


def check(query: Query, scrapes: Scrapes) -> list[str]:
    promql = grafana_to_promql(query.expr)
    used = usage(promql)
    merged: Exported = {}
    for name in used.labels:
        source = exporter(name, scrapes)
        if name in source:
            merged[name] = source[name]
    problems = used.problems(merged)
    keeps = result_labels(promql, merged)
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend):
        if label not in keeps:
            problems.append(f"the legend names {label}, which the query does not keep")
    return [f"{query.where}: {p}" for p in dict.fromkeys(problems)]


async def test_rules_and_dashboards_use_only_exported_metrics_and_labels(
    scrapes: Scrapes,
) -> None:
    all_queries = queries()
    assert len(all_queries) > 60
    problems = [p for q in all_queries for p in check(q, scrapes)]
    assert problems == []
    # The alert texts name only labels their expressions keep.
    for rule in alert_rules():
        promql = rule["expr"]
        merged = {n: exporter(n, scrapes).get(n, frozenset()) for n in usage(promql).labels}
        keeps = result_labels(promql, merged)
        texts = " ".join(rule["annotations"].values())
        named = set(re.findall(r"\$labels\.(\w+)", texts))
        assert named <= keeps, f"{rule['alert']} names {sorted(named - keeps)}"


async def test_docs_list_every_metric_the_gateway_and_aggregator_export(scrapes: Scrapes) -> None:
    documented = set(re.findall(r"`(sg_\w+)`", OPERATIONS.read_text()))
    # A counter is documented by its series name (with _total), like the queries use it.
    missing = []
    for family in sorted(scrapes.families):
        if not family.startswith("sg_") or family.endswith("_created"):
            continue
        if not {family, f"{family}_total"} & documented:
            missing.append(family)
    assert not missing, f"not in docs/operations.md: {missing}"


async def test_both_describe_their_process_as_prometheus_clients_do(scrapes: Scrapes) -> None:
    # The gateway and a stand-alone aggregator each export process_* and python_info, as any
    # Prometheus client does on its default registry.
    for exported_by in (scrapes.gateway, scrapes.aggregator):
        assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= set(exported_by)
        assert {"process_start_time_seconds", "python_info"} <= set(exported_by)


def test_a_renamed_metric_or_label_is_caught() -> None:
    """The check itself: a query on a name or label nobody exports is reported."""
    scrapes = Scrapes(
        gateway={"sg_requests_total": frozenset({"endpoint", "status"})},
        aggregator={"sg_aggregator_lag_events": frozenset({"team"})},
        families=set(),
    )
    good = Query("q", 'sum by (status) (rate(sg_requests_total{endpoint="x"}[5m]))', "{{status}}")
    assert check(good, scrapes) == []
    assert check(Query("q", "rate(sg_request_total[5m])"), scrapes) == [
        "q: metric sg_request_total is not exported"
    ]
    assert check(Query("q", 'sg_requests_total{code="200"}'), scrapes) == [
        "q: sg_requests_total has no label ['code']"
    ]
    assert check(Query("q", "sum by (model) (sg_requests_total)"), scrapes) == [
        "q: no metric of ['sg_requests_total'] has ['model']"
    ]
    assert check(Query("q", "sum(sg_requests_total)", "{{status}}"), scrapes) == [
        "q: the legend names status, which the query does not keep"
    ]
    # The aggregator's metrics must come from the aggregator's port, not the gateway's.
    assert check(Query("q", "sg_aggregator_lag_events"), scrapes) == []
    assert check(Query("q", "sg_aggregator_pending_events"), scrapes) == [
        "q: metric sg_aggregator_pending_events is not exported"
    ]
