"""A gateway with seeded spend for the dashboard tests: three teams' traffic through the real
HTTP API (embedded store, a clock fixed mid-month), rolled up by the embedded aggregator; and,
for the forecast and anomalies, weeks of past spend appended to the same streams and a planted
spend anomaly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.state import PIPELINE, REDIS
from gateway.providers.mock import MockUpstream
from tests.anomalies.support import plant_beside_detector
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory
from tests.ledger import history, produce

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TRAFFIC = {"alpha": 5, "beta": 3, "gamma": 2}  # requests per team
OUTPUT_TOKENS = 30_000  # long answers: dollars and cents to compare, not fractions of a cent


async def seeded_gateway(
    gateway_factory: GatewayFactory,
    mock: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: Callable[[], float] | None = None,
) -> Gateway:
    mock.options.completion_tokens = OUTPUT_TOKENS
    monkeypatch.setenv("SPENDGATE_STORE_URL", "memory://")
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    gw = await gateway_factory("budgets.yaml", teams=tuple(TRAFFIC), clock=clock)
    async with aiohttp.ClientSession() as http:
        for team, n in TRAFFIC.items():
            for i in range(n):
                body = {
                    "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"question {i} of {team}"}],
                    "max_tokens": OUTPUT_TOKENS,
                }
                headers = {"Authorization": f"Bearer {gw.keys[team]}"}
                async with http.post(
                    gw.url + "/v1/chat/completions", json=body, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
        await gw.app[PIPELINE].accountant.drain()
        await showback(http, gw, sum(TRAFFIC.values()))  # rolled up by the embedded aggregator
    return gw


async def showback(http: aiohttp.ClientSession, gw: Gateway, requests: int) -> Any:
    """The showback report of this month so far, once it counts `requests` requests."""
    async with asyncio.timeout(10):
        while True:
            async with http.get(gw.url + "/admin/reports/showback", headers=ADMIN) as r:
                assert r.status == 200, await r.text()
                report = await r.json()
            if report["total"]["requests"] == requests:
                return report
            await asyncio.sleep(0.02)


# Past spend per team (USD on an average weekday), from HISTORY_FIRST to the day before the clock's.
HISTORY = {"alpha": 60.0, "beta": 25.0, "gamma": 8.0}
HISTORY_FIRST, HISTORY_LAST = date(2026, 9, 21), date(2026, 11, 4)


async def add_history(gw: Gateway) -> None:
    """Six weeks of daily spend before today for every team, appended to their spend streams
    and rolled up by the embedded aggregator (so each has a forecast), and a planted anomaly
    (team alpha's spike, escalated to high, with two causes)."""
    redis = gw.app[REDIS]
    events = [
        e
        for n, (team, usd) in enumerate(HISTORY.items())
        for e in history(team, HISTORY_FIRST, HISTORY_LAST, usd, seed=n)
    ]
    await produce(redis, events)
    await plant_beside_detector(redis)
    period = f"start={HISTORY_FIRST.isoformat()}&end=2026-11-05"
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            async with http.get(f"{gw.url}/admin/reports/showback?{period}", headers=ADMIN) as r:
                assert r.status == 200, await r.text()
                applied = (await r.json())["total"]["requests"]
            if applied == len(events) + sum(TRAFFIC.values()):
                return
            await asyncio.sleep(0.05)


async def admin_get(http: aiohttp.ClientSession, gw: Gateway, path: str) -> Any:
    """An admin API answer: JSON, or the text of a CSV."""
    async with http.get(gw.url + path, headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        return await r.json() if r.content_type == "application/json" else await r.text()
