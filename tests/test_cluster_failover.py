"""spendgate on a real Redis Cluster (3 primaries, 3 replicas): a budget shared by two gateway
processes admits exactly k requests; and a primary that fails in the middle of a load run (its
replica promoted) loses no spend and counts none twice: settles that could not reach it are
spooled and replayed into the cluster, and the aggregated totals equal, to the nano-dollar,
what the mock upstream's usage implies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.service import run_service
from gateway.app.state import LIVE_CONFIG
from gateway.providers.mock import MockUpstream
from gateway.store.cluster import slot_of
from gateway.store.connect import close_store, open_store
from gateway.store.keys import Keyring
from gateway.types import SpendEvent
from tests.cluster import LocalCluster, binaries
from tests.conftest import ADMIN_KEY, FIXTURES, GatewayFactory, _free_port
from tests.outage import assert_counted_once, serve_through_outage
from tests.test_accounting import gpt4o_worst_case_nano, post_chat


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A cluster of the test's own: it is failed over, the session's is not."""
    if binaries() is None:
        if os.environ.get("SPENDGATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server / redis-cli are required (SPENDGATE_REQUIRE_REDIS=1)")
        pytest.skip("no redis-server / redis-cli on PATH")
    # A short node timeout: the replica takes over about 2 s after its primary dies.
    local = LocalCluster(tmp_path / "cluster", node_timeout_ms=1000)
    try:
        await asyncio.to_thread(local.start)
        yield local
    finally:
        local.stop()


async def _events(url: str, team: str) -> list[SpendEvent]:
    redis = await open_store(url)
    try:
        entries = await redis.xrange(rediskeys.events_stream(team))
    finally:
        await close_store(redis)
    return [SpendEvent.from_fields(fields) for _, fields in entries]


async def test_a_budget_shared_by_two_gateway_processes_admits_exactly_k(
    real_cluster_url: str,
    mock_upstream: MockUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis = await open_store(real_cluster_url)
    await redis.flushdb()
    k = 7
    output = 400  # the mock writes them all: a settle frees within 0.4 % of a worst case, so
    # a request that reserves after another settled still finds no room for an eighth
    mock_upstream.options.completion_tokens = output
    worst = gpt4o_worst_case_nano(output)
    limit = k * worst + worst // 2  # room for exactly k worst cases
    env = {
        **os.environ,
        "SPENDGATE_STORE_URL": real_cluster_url,
        "SPENDGATE_UPSTREAM_URL": mock_upstream.base_url,
        "SPENDGATE_ADMIN_KEY": ADMIN_KEY,
        "SPENDGATE_ALPHA_LIMIT_USD": f"{limit / 1e9:.9f}",
        "SPENDGATE_ALPHA_PERIOD": "total",  # the processes run on the real clock
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    mock_upstream.options.latency_s = 0.5
    processes: list[tuple[asyncio.subprocess.Process, str]] = []
    try:
        for n in range(2):
            port = _free_port()
            env["SPENDGATE_SPOOL_DIR"] = str(tmp_path / f"spool-{n}")
            with (tmp_path / f"serve-{n}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *[sys.executable, "-m", "gateway", "serve", "--config"],
                    *[str(FIXTURES / "budgets.yaml"), "--port", str(port)],
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            processes.append((process, f"http://127.0.0.1:{port}"))
        secret, _ = await Keyring(redis).create("alpha", project="alpha-project")
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                for _, url in processes:
                    while True:
                        try:
                            async with http.get(url + "/readyz") as response:
                                if response.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.1)
            results = await asyncio.gather(
                *(
                    post_chat(http, processes[n % 2][1], secret, max_tokens=output)
                    for n in range(200)
                )
            )
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) == k
        assert statuses.count(429) == 200 - k
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)  # each settles what it served, then exits
            async with asyncio.timeout(30):
                assert await process.wait() == 0
        served = [e for e in await _events(real_cluster_url, "alpha") if e.status == 200]
        assert len(served) == k
        assert 0 < sum(e.cost_nano for e in served) <= limit
    finally:
        for process, _ in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await redis.flushdb()
        await close_store(redis)


async def test_a_primary_failing_over_mid_load_loses_and_doubles_nothing(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    cluster: LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SPENDGATE_STORE_URL", cluster.url)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    mock_upstream.options.latency_s = 0.005
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    aggregator_redis = await open_store(cluster.url)
    stop = asyncio.Event()
    config = gw.app[LIVE_CONFIG]
    aggregator = asyncio.create_task(
        run_service(aggregator_redis, lambda: config.current, stop, clock=gw.clock)
    )
    # The primary of team alpha's slot: its budget, reservations and spend stream.
    manager = aggregator_redis.nodes_manager  # type: ignore[attr-defined]
    await aggregator_redis.ping()
    victim = int(manager.get_node_from_slot(slot_of(rediskeys.events_stream("alpha"))).port)
    promoted: list[int] = []

    async def fail_over() -> None:
        # Mid-run, with requests and settles in flight: the primary stops writing (they queue
        # on it), its replica catches up, and it is killed.
        promoted.append(await cluster.kill_in_sync(victim, hold_s=0.3))

    statuses = await serve_through_outage(gw, {60: fail_over})
    assert promoted, "the primary was killed mid-run"
    assert statuses == [200] * 160, "fail-open: every request is served through the failover"
    await cluster.wait_promoted(promoted[0])
    await assert_counted_once(gw, mock_upstream, aggregator_redis, stop, aggregator)
    await close_store(aggregator_redis)


async def test_the_cluster_helpers_see_the_promotion(cluster: LocalCluster) -> None:
    # The fixture's own failover, checked on its own: the replica becomes the primary.
    primary = (await cluster.primaries())[0]
    replica = await cluster.replica_of(primary)
    assert await cluster.kill_in_sync(primary) == replica
    await cluster.wait_promoted(replica)
    assert replica in await cluster.primaries()
    assert primary not in await cluster.primaries()
    client = Redis(port=replica)
    try:
        assert (await client.info("replication"))["role"] == "master"
    finally:
        await client.aclose()
