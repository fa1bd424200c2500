"""The local store keeps what it acknowledged through crashes of a real `spendgate serve`:
SIGKILL of the gateway mid-load (its server is told to stop, flushes and exits), then a
restart: every key and budget change is there, the budget counters equal the ledger, and every
answer given more than a second before the kill is in the ledger, once. SIGKILL of the store's
server mid-load: the gateway restarts it and replays what it spooled meanwhile, so nothing
answered is missing at all."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway import rediskeys
from gateway.providers.mock import MockUpstream
from gateway.store.keys import Keyring
from gateway.store.server import LOCK_FILE
from tests.serving import TEAM, Served, budget_counter, ledger, store_of

CLIENTS = 8


@pytest.fixture
async def served(mock_upstream: MockUpstream, tmp_path: Path) -> AsyncIterator[Served]:
    mock_upstream.options.latency_s = 0.005
    gateway = Served(tmp_path, mock_upstream.base_url)
    yield gateway
    gateway.kill()


class Load:
    """CLIENTS loops of chat requests until stopped; the request id and the (monotonic) time
    of every answer the gateway acknowledged with a 200."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.acked: list[tuple[str, float]] = []
        self.failed = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._http = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(CLIENTS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._http.close()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.acked) < count:
                await asyncio.sleep(0.01)

    async def answering_for(self, seconds: float) -> None:
        """Until answers have come for `seconds` (from the first to the latest)."""
        async with asyncio.timeout(30):
            while not self.acked or self.acked[-1][1] - self.acked[0][1] < seconds:
                await asyncio.sleep(0.01)

    async def _loop(self) -> None:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self._stop.is_set():
            try:
                async with self._http.post(
                    self.url + "/v1/chat/completions", json=body, headers=headers
                ) as reply:
                    await reply.read()
                    if reply.status == 200:
                        self.acked.append((reply.headers["x-request-id"], time.monotonic()))
                    else:
                        self.failed += 1
            except aiohttp.ClientError:
                self.failed += 1
                await asyncio.sleep(0.01)


async def _consistent(served: Served) -> set[str]:
    """The ledger's request ids, after checking it holds each event once and that the budget
    counter's spend is exactly its sum. (A killed gateway's budget lease stays reserved until
    its deadline, as documented: what it held is not known to be unspent.)"""
    async with store_of(served) as redis:
        events = await ledger(redis)
        counter = await budget_counter(redis)
    assert len({e.event_id for e in events}) == len(events)
    assert counter["spent_nano"] == sum(e.cost_nano for e in events)
    return {e.request_id for e in events}


async def test_a_gateway_killed_mid_load_loses_no_key_budget_change_or_older_spend(
    served: Served,
) -> None:
    await served.start()
    key = await served.new_key(name="before-load")
    async with Load(served.url, key) as load:
        await load.answering_for(2.0)
        # Changes made under load, acknowledged, then the crash right after.
        late_key = await served.new_key(TEAM, name="during-load")
        rule = {"name": "beta-ops", "team": "beta", "period": "total", "limit_usd": 5}
        status, _ = await served.admin("POST", "/admin/budgets", rule)
        assert status == 201
        killed_at = time.monotonic()
        served.signal(signal.SIGKILL)
        assert await served.exit_code() == -signal.SIGKILL
    acked = load.acked
    await served.start()  # the killed gateway's server has stopped: the directory is free
    status, budgets = await served.admin("GET", "/admin/budgets")
    assert "beta-ops" in {b["name"] for b in budgets["data"]}
    async with Load(served.url, late_key) as after:
        await after.until(1)  # the key created just before the kill works
    assert await served.stop() == 0
    async with store_of(served) as redis:
        names = {k.name for k in await Keyring(redis).list()}
    assert {"before-load", "during-load"} <= names
    recorded = await _consistent(served)
    older = {request_id for request_id, at in acked if at < killed_at - 1.0}
    assert older, "the load ran for less than a second before the kill"
    assert older <= recorded


async def test_a_store_server_killed_mid_load_is_restarted_and_nothing_answered_is_lost(
    served: Served,
) -> None:
    await served.start()
    key = await served.new_key()
    lock = json.loads((served.data_dir / LOCK_FILE).read_text())
    async with Load(served.url, key) as load:
        await load.until(200)
        os.kill(lock["server"], signal.SIGKILL)
        await load.until(len(load.acked) + 300)  # served on: fail open, spooled, replayed
        async with asyncio.timeout(30):  # the new server's pid is recorded once it answers
            while json.loads((served.data_dir / LOCK_FILE).read_text())["server"] == lock["server"]:
                await asyncio.sleep(0.05)
    assert await served.stop() == 0
    assert "local store exited" in served.log()
    assert {request_id for request_id, _ in load.acked} <= await _consistent(served)
    async with store_of(served) as redis:
        assert await redis.exists(rediskeys.key_index())  # the keys survived too


async def test_a_copy_of_the_stopped_data_directory_restores_that_state(
    served: Served, tmp_path: Path
) -> None:
    """The documented backup (stop, copy the directory) and restore (stop, put the copy back,
    start): what was there at the backup is back, what came after is gone."""
    await served.start()
    kept = await served.new_key(name="kept")
    async with Load(served.url, kept) as load:
        await load.until(50)
    assert await served.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(served.data_dir, backup)
    backed_up = await _consistent(served)

    await served.start()
    later = await served.new_key(name="after-the-backup")
    async with Load(served.url, later) as load:
        await load.until(50)
    assert await served.stop() == 0
    assert len(await _consistent(served)) > len(backed_up)

    shutil.move(served.data_dir, tmp_path / "replaced")
    shutil.copytree(backup, served.data_dir)
    await served.start()
    async with Load(served.url, kept) as load:
        await load.until(1)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            served.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {later}"},
        ) as reply,
    ):
        assert reply.status == 401  # a key created after the backup is gone
    assert await served.stop() == 0
    async with store_of(served) as redis:
        names = {k.name for k in await Keyring(redis).list()}
    assert "kept" in names and "after-the-backup" not in names
    assert backed_up <= await _consistent(served)
