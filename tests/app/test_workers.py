"""`spendgate serve --workers N` as real processes on a real port, against a real Redis: both
workers serve, any worker's /metrics reports every worker's requests, a budget holds across
them, SIGHUP reloads each, SIGTERM stops all cleanly, and a killed worker is replaced.
Plus what is refused (the embedded store) and a supervisor that gives up."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.budgets.spool import adopt_segments, orphaned_directories
from gateway.providers.mock import MockUpstream
from gateway.store.keys import Keyring
from tests.conftest import ADMIN_KEY, FIXTURES
from tests.test_accounting import MAX_TOKENS, MESSAGES, gpt4o_worst_case_nano, stream_events

DB = 7  # the real-Redis database of these tests, flushed by each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fleet:
    """One `spendgate serve --workers N` supervisor and what it logged."""

    process: asyncio.subprocess.Process
    url: str
    log_path: Path
    redis_url: str

    def messages(self, logger: str | None = None) -> list[str]:
        found = []
        for line in self.log_path.read_bytes().splitlines():
            if not line.startswith(b"{"):
                continue  # the start-up banner
            doc = orjson.loads(line)
            if logger is None or doc["logger"] == logger:
                found.append(doc["msg"])
        return found

    async def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        """The supervisor's or the workers' log messages matching `pattern`, once there are
        `count` of them (the supervisor exiting first is a failure)."""
        async with asyncio.timeout(15):
            while True:
                found = [m for m in self.messages() if re.search(pattern, m)]
                if len(found) >= count:
                    return found
                assert self.process.returncode is None, self.log_path.read_text()[-3000:]
                await asyncio.sleep(0.05)

    def workers(self) -> list[int]:
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sorted(int(child) for child in children)

    async def key(self, team: str) -> str:
        redis = Redis.from_url(self.redis_url)
        try:
            secret, _ = await Keyring(redis).create(team, project=f"{team}-project")
        finally:
            await redis.aclose()
        return secret

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            return await self.process.wait()


Start = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def start(
    real_redis_url: str,
    mock_upstream: MockUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Start]:
    """Start a supervisor on a free port with budgets.yaml, the mock upstream and DB."""
    redis_url = real_redis_url.rsplit("/", 1)[0] + f"/{DB}"
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    monkeypatch.setenv("SPENDGATE_STORE_URL", redis_url)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", mock_upstream.base_url)
    monkeypatch.setenv("SPENDGATE_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    config = tmp_path / "budgets.yaml"
    config.write_text((FIXTURES / "budgets.yaml").read_text())
    started: list[Fleet] = []

    async def launch(workers: int = 2, ready: bool = True, port: int | None = None) -> Fleet:
        port = port or _free_port()
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                *["--port", str(port), "--workers", str(workers)],
                stdout=log,
                stderr=log,
            )
        fleet = Fleet(process, f"http://127.0.0.1:{port}", log_path, redis_url)
        started.append(fleet)
        if ready:
            await fleet.wait_for(f"all {workers} workers listening")
        return fleet

    yield launch
    for fleet in started:  # a test that failed half-way leaves no process behind
        if fleet.process.returncode is None:
            for pid in fleet.workers():
                os.kill(pid, signal.SIGKILL)
            fleet.process.kill()
            await fleet.process.wait()
        # nor the private metrics directory a killed supervisor could not remove
        for message in fleet.messages("spendgate.workers"):
            if match := re.fullmatch(
                r"metrics: multiprocess mode, files in (.*spendgate-.*)", message
            ):
                shutil.rmtree(match.group(1), ignore_errors=True)


async def post_chat(http: aiohttp.ClientSession, url: str, key: str) -> int:
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
        await response.read()
        return response.status


async def scrape(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """The sum of a metric's samples in one /metrics answer."""
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def eventually(read: Callable[[], Awaitable[float]], expected: float) -> float:
    """What `read()` returns once it is `expected`, or after 5 s whatever it last returned: a
    worker counts a request in its metrics just after the response has gone out."""
    deadline = time.monotonic() + 5.0
    while (value := await read()) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return value


def requests_served_by(metrics_dir: Path, pid: int) -> float:
    """sg_requests_total as counted by one worker alone (its own counter file)."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(
        sample.value
        for family in MultiProcessCollector.merge([str(path)])
        for sample in family.samples
        if sample.name == "sg_requests_total"
    )


def gone(*paths: str | Path) -> bool:
    return not any(os.path.exists(path) for path in paths)


def exited(pid: int) -> bool:
    """Whether a process has ended (a zombie no one reaped yet counts: it runs no more code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def fresh_connections() -> aiohttp.ClientSession:
    # One connection per request, so the kernel picks a worker for each.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))


async def test_two_workers_serve_one_port_and_report_each_others_metrics(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_dir = tmp_path / "metrics"  # set by the user: used, and left in place
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"a previous run's")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    fleet = await start()
    workers = fleet.workers()
    assert len(workers) == 2
    assert not (metrics_dir / "counter_1.db").exists()
    key = await fleet.key("alpha")
    async with fresh_connections() as http:
        statuses = await asyncio.gather(*(post_chat(http, fleet.url, key) for _ in range(40)))
        assert statuses == [200] * 40

        async def served_in_all() -> float:
            return sum(requests_served_by(metrics_dir, pid) for pid in workers)

        assert await eventually(served_in_all, 40) == 40
        served = [requests_served_by(metrics_dir, pid) for pid in workers]
        assert all(n > 0 for n in served), served
        # Whichever worker answers /metrics reports the requests of both, and each worker's
        # process (resident memory, CPU, ...) by its pid.
        totals = [await scrape(http, fleet.url, "sg_requests_total") for _ in range(10)]
        async with http.get(fleet.url + "/metrics") as response:
            text = await response.text()
    assert totals == [40] * 10
    rss = {
        int(sample.labels["pid"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "process_resident_memory_bytes"
    }
    assert sorted(rss) == workers and all(value > 10 * 2**20 for value in rss.values()), rss
    fleet.process.send_signal(signal.SIGHUP)
    await fleet.wait_for("^config reloaded from", count=2)
    assert await fleet.stop() == 0
    assert gone(*(f"/proc/{pid}" for pid in workers))
    # Dead workers' live gauges are gone; their counters stay for a scrape after them.
    assert sorted(p.name for p in metrics_dir.glob("gauge_live*")) == []
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2


async def test_a_budget_shared_by_two_workers_admits_exactly_k_requests(
    start: Start, mock_upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = 7
    worst = gpt4o_worst_case_nano()
    limit = k * worst + worst // 2  # room for exactly k worst cases
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{limit / 1e9:.9f}")
    monkeypatch.setenv("SPENDGATE_ALPHA_PERIOD", "total")  # workers run on the real clock
    mock_upstream.options.latency_s = 0.5  # every request reserves before any settles
    fleet = await start()
    key = await fleet.key("alpha")
    async with fresh_connections() as http:
        statuses = await asyncio.gather(*(post_chat(http, fleet.url, key) for _ in range(200)))
    assert statuses.count(200) == k
    assert statuses.count(429) == 200 - k
    assert await fleet.stop() == 0  # each worker drained its settles before exiting
    served = [e for e in await stream_events(fleet.redis_url, "alpha") if e.status == 200]
    assert len(served) == k
    assert 0 < sum(e.cost_nano for e in served) <= limit


async def test_a_killed_worker_is_replaced_and_its_gauges_leave_the_sums(
    start: Start, mock_upstream: MockUpstream
) -> None:
    fleet = await start()
    (line,) = await fleet.wait_for("^metrics: multiprocess mode, files in ")
    metrics_dir = Path(line.rsplit(" ", 1)[1])  # private to this run
    key = await fleet.key("alpha")
    victim, survivor = fleet.workers()
    mock_upstream.options.latency_s = 2.0
    async with fresh_connections() as http:
        slow = asyncio.gather(
            *(post_chat(http, fleet.url, key) for _ in range(20)), return_exceptions=True
        )
        async with asyncio.timeout(5):
            while await scrape(http, fleet.url, "sg_inflight_requests") < 20:
                await asyncio.sleep(0.02)
        os.kill(victim, signal.SIGKILL)
        await fleet.wait_for(rf"^worker \d \(pid {victim}\) was killed by SIGKILL while serving")
        *_, ready = await fleet.wait_for(r"^worker \d \(pid \d+\) listening", count=3)
        results = await slow
        mock_upstream.options.latency_s = 0.0
        served = results.count(200)
        assert 0 < served < 20  # the victim's requests failed: their connections were cut
        assert all(r == 200 or isinstance(r, aiohttp.ClientError) for r in results)
        # Without mark_process_dead the victim's in-flight count would stay in the sum.
        assert await scrape(http, fleet.url, "sg_inflight_requests") == 0
        assert (
            await eventually(lambda: scrape(http, fleet.url, "sg_requests_total"), served) == served
        )
        after = await asyncio.gather(*(post_chat(http, fleet.url, key) for _ in range(20)))
        async with http.get(fleet.url + "/metrics") as response:
            text = await response.text()
    assert after == [200] * 20
    replacement = int(re.findall(r"pid (\d+)", ready)[0])
    assert fleet.workers() == sorted([survivor, replacement])
    # The killed worker's process is no longer reported; its replacement's is.
    reported = {
        int(sample.labels["pid"])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "process_start_time_seconds"
    }
    assert reported == {survivor, replacement}
    assert await fleet.stop() == 0
    assert gone(metrics_dir)  # the private directory is removed at exit


async def test_workers_stop_gracefully_when_the_supervisor_is_killed(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed supervisor cannot remove its private metrics directory: give it this one.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    fleet = await start()
    workers = fleet.workers()
    fleet.process.kill()
    await fleet.process.wait()
    async with asyncio.timeout(10):
        while not all(exited(pid) for pid in workers):
            await asyncio.sleep(0.05)
    stopped = [m for m in fleet.messages() if m == "the supervisor is gone: stopping this worker"]
    assert len(stopped) == 2


async def test_a_port_already_taken_is_refused_at_once(start: Start) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fleet = await start(ready=False, port=port)
        async with asyncio.timeout(10):
            assert await fleet.process.wait() == 1
    assert fleet.log_path.read_text() == (
        f"spendgate serve --workers 2: port {port} on 127.0.0.1 is already in use; choose "
        "another with --port (or server.port in the config)\n"
    )
    assert not any("started" in m for m in fleet.messages())


async def test_more_than_one_worker_on_the_embedded_store_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SPENDGATE_ADMIN_KEY", ADMIN_KEY)
    config = FIXTURES / "gateway.yaml"  # store.url: memory://
    argv = ["serve", "--config", str(config), "--port", str(_free_port()), "--workers", "2"]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert b"store.url is memory://" in done.stderr
    assert b"would not share keys, budgets or spend" in done.stderr


async def test_the_supervisor_gives_up_when_workers_keep_dying_at_start(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(blocker / "spool"))  # each worker fails
    fleet = await start(ready=False)
    # A bound on a hang only: four worker starts and the back-off between them take ~10 s on
    # a quiet machine, and more than 20 on a loaded one.
    async with asyncio.timeout(50):
        code = await fleet.process.wait()
    assert code == 1
    assert any("before listening, 4 times in a row: giving up" in m for m in fleet.messages())
    assert any("restarting it in 2.0 s" in m for m in fleet.messages())


def test_segments_no_worker_would_replay_are_adopted(tmp_path: Path) -> None:
    base = tmp_path / "spool"
    for directory, name in [
        (base, "spool-4.jsonl"),  # left by a single process
        (base / "worker-0", "spool-0.jsonl"),
        (base / "worker-1", "spool-0.jsonl"),
        (base / "worker-2", "spool-7.jsonl"),  # by a run with three workers
    ]:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(f'{{"from": "{directory.name}"}}\n')
    assert orphaned_directories(base, 1, 2) == []  # only worker 0 adopts
    orphans = orphaned_directories(base, 0, 2)
    assert orphans == [base, base / "worker-2"]
    assert adopt_segments(base / "worker-0", orphans) == 2
    assert sorted(p.name for p in (base / "worker-0").iterdir()) == [
        "spool-0.jsonl",
        "spool-1.jsonl",
        "spool-2.jsonl",
    ]
    # Back to one process: it adopts every worker's segments.
    assert adopt_segments(base, orphaned_directories(base, None, 1)) == 4
    assert sorted(p.name for p in base.glob("spool-*.jsonl")) == [
        f"spool-{n}.jsonl" for n in range(4)
    ]
