"""The ledger survives its store going away: Redis killed in the middle of a load run (and
restarted from its append-only file) loses no spend and counts none twice. Requests are served
throughout (store.on_unavailable: open), settles that cannot reach Redis go to the spool and are
replayed when it is back, and the aggregated totals equal, to the nano-dollar, what the mock
upstream's usage implies. Also: a client that leaves mid-stream settles what was generated."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.aggregator.service import run_service
from gateway.app.state import LEDGER, LIVE_CONFIG, PIPELINE, SPOOL
from gateway.providers.mock import MockUpstream
from gateway.store.connect import open_store
from gateway.types import SpendEvent
from tests.conftest import GatewayFactory
from tests.outage import assert_counted_once, serve_through_outage


class RedisProcess:
    """A redis-server of the test's own, persisting every write (appendfsync always), so that a
    SIGKILL loses nothing that was acknowledged: what production runs with AOF."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs redis-server on PATH")
        self.binary, self.workdir = binary, workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        if await probe.ping():
                            return
                    except (OSError, RedisError):  # not listening yet, or loading its AOF
                        await asyncio.sleep(0.02)
        finally:
            await probe.aclose()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
async def redis_process(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis")
    server.workdir.mkdir()
    await server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


async def test_redis_killed_mid_load_loses_and_doubles_nothing(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    redis_process: RedisProcess,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SPENDGATE_STORE_URL", redis_process.url)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    mock_upstream.options.latency_s = 0.005
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    aggregator_redis = await open_store(redis_process.url)  # retries on a dropped connection
    stop = asyncio.Event()
    config = gw.app[LIVE_CONFIG]
    aggregator = asyncio.create_task(
        run_service(aggregator_redis, lambda: config.current, stop, clock=gw.clock)
    )
    outage = asyncio.Event()

    async def kill() -> None:  # mid-run, with requests and settles in flight
        redis_process.kill()
        outage.set()

    async def restart() -> None:
        # Requests reserved in a lease touch Redis only to settle: keep it down until settles
        # have failed over to the spool, then bring it back.
        async with asyncio.timeout(20):
            while gw.app[SPOOL].appended == 0:
                await asyncio.sleep(0.01)
        await redis_process.start()

    statuses = await serve_through_outage(gw, {60: kill, 120: restart})
    assert outage.is_set()
    assert statuses == [200] * 160, "fail-open: every request is served through the outage"
    await assert_counted_once(gw, mock_upstream, aggregator_redis, stop, aggregator)
    await aggregator_redis.aclose()


async def test_a_client_leaving_mid_stream_settles_what_was_generated(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    redis_process: RedisProcess,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SPENDGATE_STORE_URL", redis_process.url)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    mock_upstream.options.chunk_delay_s = 0.02
    mock_upstream.options.completion_tokens = 200
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    body = {
        "model": "gpt-4o",
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story"}],
    }
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gw.keys['alpha']}"},
        )
        seen = b""
        while seen.count(b"\n\n") < 6:
            seen += await response.content.readany()
        response.close()
    redis = Redis.from_url(redis_process.url)
    try:
        async with asyncio.timeout(10):
            while not await redis.xlen(rediskeys.events_stream("alpha")):
                await asyncio.sleep(0.02)
        ((_, fields),) = await redis.xrange(rediskeys.events_stream("alpha"))
        event = SpendEvent.from_fields(fields)
        assert event.outcome == "client_disconnected" and event.status == 499
        assert 4 <= event.completion_tokens < 200 and event.tokens_estimated
        assert event.cost_nano > 0
        budgets = gw.app[PIPELINE].accountant.registry.all("alpha")
        (status,) = await gw.app[LEDGER].budget_status("alpha", budgets)
        assert status.reserved_nano == 0 and status.spent_nano == event.cost_nano
    finally:
        await redis.aclose()
