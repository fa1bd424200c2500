"""The local store's aggregator as a child process of a real `spendgate serve` (and of the
supervisor of `serve --workers 2`): it applies the spend the gateway writes, its metrics are
on the gateway's /metrics, it is restarted when it dies, and it stops with the gateway, also
when the gateway is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import rediskeys
from gateway.aggregator.child import AggregatorChild
from gateway.providers.mock import MockUpstream
from tests.conftest import ADMIN_KEY
from tests.serving import TEAM, Served, store_of

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the child through /proc"
)


@pytest.fixture
async def served(mock_upstream: MockUpstream, tmp_path: Path) -> AsyncIterator[Served]:
    gateway = Served(tmp_path, mock_upstream.base_url)
    yield gateway
    gateway.kill()


def aggregators_under(pid: int) -> list[int]:
    """The `spendgate aggregate` processes among the descendants of `pid`."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                continue
        try:
            argv = Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"aggregate" in argv and current != pid:
            found.append(current)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(check: Callable[[], object], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def chat(url: str, key: str, count: int) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.post(
                url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as reply:
                assert reply.status == 200, await reply.text()


async def applied_metric(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        text = await response.text()
    families = list(text_string_to_metric_families(text))  # valid: one header per family
    return sum(
        s.value
        for f in families
        for s in f.samples
        if s.name == "sg_aggregator_events_total" and s.labels == {"outcome": "applied"}
    )


async def all_applied(served: Served, count: int) -> None:
    """Until the team's stream holds `count` events and the aggregators' group has applied
    (acknowledged) every one."""
    async with store_of(served) as redis, asyncio.timeout(30):
        stream = rediskeys.events_stream(TEAM)
        while True:
            length = await redis.xlen(stream)
            groups = await redis.xinfo_groups(stream) if length else []
            group = next((g for g in groups if g["name"] == rediskeys.EVENTS_GROUP.encode()), None)
            if length == count and group and group["lag"] == 0 and group["pending"] == 0:
                return
            await asyncio.sleep(0.05)


async def test_the_aggregator_is_a_restarted_child_whose_metrics_the_gateway_serves(
    served: Served,
) -> None:
    await served.start()
    assert served.process is not None
    pid = served.process.pid
    await until(lambda: aggregators_under(pid))
    (child,) = aggregators_under(pid)
    # Started once the gateway listens, so its start-up does not delay the first request.
    started = "aggregator started as a child process"
    await until(lambda: started in served.log())  # logged once the spawn returns
    log = served.log()
    assert log.index("serving on") < log.index(started)
    key = await served.new_key()
    await chat(served.url, key, 12)
    await all_applied(served, 12)
    await until_metric(served.url, 12)
    # Its metrics are merged into the gateway's, but process_* describe the gateway alone: one
    # series, the gateway process's resident memory, not its sum with the aggregator's.
    async with aiohttp.ClientSession() as http, http.get(served.url + "/metrics") as response:
        text = await response.text()
    (rss,) = (
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "process_resident_memory_bytes"
    )
    assert rss.labels == {}
    assert 0.8 * resident_bytes(pid) < rss.value < 1.2 * resident_bytes(pid)

    os.kill(child, signal.SIGKILL)
    await until(lambda: aggregators_under(pid) not in ([], [child]))
    (restarted,) = aggregators_under(pid)
    await chat(served.url, key, 5)
    await all_applied(served, 17)
    assert "the aggregator exited with -9; restarting it" in served.log()

    assert await served.stop() == 0
    assert not alive(restarted)


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


async def until_metric(url: str, value: float) -> None:
    async with asyncio.timeout(30):
        while await applied_metric(url) != value:
            await asyncio.sleep(0.1)


async def test_a_killed_gateway_leaves_no_aggregator_behind(served: Served) -> None:
    await served.start()
    assert served.process is not None
    pid = served.process.pid
    await until(lambda: aggregators_under(pid))
    (child,) = aggregators_under(pid)
    served.kill()  # SIGKILL: no chance to stop it; the child reads the end of its stdin
    await until(lambda: not alive(child))


async def test_with_workers_the_supervisor_runs_the_aggregator_and_every_worker_reports_it(
    served: Served, tmp_path: Path
) -> None:
    await served.start()  # writes the config, then leaves the directory to the supervisor
    config = served.directory / "gateway.yaml"
    key = await served.new_key()
    assert await served.stop() == 0
    env = {**os.environ, "SPENDGATE_UPSTREAM_URL": served.upstream_url}
    env.pop("SPENDGATE_STORE_URL", None)
    env["SPENDGATE_ADMIN_KEY"] = ADMIN_KEY
    log = (tmp_path / "workers.log").open("wb")
    argv = ["serve", "--config", str(config), "--port", str(served.port), "--workers", "2"]
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv], env=env, stdout=log, stderr=log
    )
    try:
        await until(lambda: aggregators_under(supervisor.pid))
        (child,) = aggregators_under(supervisor.pid)
        started = "aggregator started as a child process"
        await until(lambda: started in (tmp_path / "workers.log").read_text())
        said = (tmp_path / "workers.log").read_text()
        assert said.index("all 2 workers listening") < said.index(started)
        await chat(served.url, key, 10)
        await all_applied(served, 10)
        # Whichever worker answers /metrics (one connection each: the kernel picks) has it.
        for _ in range(6):
            await until_metric(served.url, 10)
        supervisor.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            while supervisor.poll() is None:
                await asyncio.sleep(0.05)
        assert supervisor.returncode == 0
        assert not alive(child)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        log.close()


class Waiting(AggregatorChild):
    """A child that only waits for its stdin to end, as the aggregator does."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.stdin.read()"]


async def test_the_child_starts_once_the_gateway_listens_and_stops_on_the_way_out(
    tmp_path: Path,
) -> None:
    child, listening = Waiting("gateway.yaml", tmp_path / "metrics.sock"), asyncio.Event()
    async with child.running_once(listening):
        await asyncio.sleep(0)
        assert child.pid is None
        listening.set()
        await until(lambda: child.pid is not None)
        assert child.pid is not None
        pid = child.pid
        assert alive(pid)
    assert not alive(pid)


async def test_a_gateway_that_never_listened_never_starts_the_child(tmp_path: Path) -> None:
    child, listening = Waiting("gateway.yaml", tmp_path / "metrics.sock"), asyncio.Event()
    async with child.running_once(listening):
        await asyncio.sleep(0)
    listening.set()  # too late: the block is over
    await asyncio.sleep(0)
    assert child.pid is None
