"""A gateway with seeded spend for the dashboard tests: three teams' traffic through the real
HTTP API (embedded store, a clock fixed mid-month), rolled up by the embedded aggregator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.state import PIPELINE
from gateway.providers.mock import MockUpstream
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TRAFFIC = {"alpha": 5, "beta": 3, "gamma": 2}  # requests per team
OUTPUT_TOKENS = 30_000  # long answers: dollars and cents to compare, not fractions of a cent


async def seeded_gateway(
    gateway_factory: GatewayFactory,
    mock: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Gateway:
    mock.options.completion_tokens = OUTPUT_TOKENS
    monkeypatch.setenv("SPENDGATE_STORE_URL", "memory://")
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    gw = await gateway_factory("budgets.yaml", teams=tuple(TRAFFIC))
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
