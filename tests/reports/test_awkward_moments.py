"""The ledger and its reports at the moments where periods turn over (first and last second of a
month, a leap day, the last second of a year), on a gateway whose clock is fixed there: spend
is dated, budgeted, rolled up and reported in the period the clock says, whatever today is."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.state import LEDGER, PIPELINE
from gateway.types import usd_to_nano
from tests.clock import AWKWARD_MOMENTS, FakeClock
from tests.conftest import ADMIN_KEY, GatewayFactory

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def chat(http: aiohttp.ClientSession, url: str, key: str) -> int:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with http.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status == 200, await response.text()
        return usd_to_nano(response.headers["x-sg-cost-usd"])


async def admin_get(http: aiohttp.ClientSession, url: str, path: str) -> Any:
    async with http.get(url + path, headers=ADMIN) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def direct_total(http: aiohttp.ClientSession, url: str, month: str) -> int:
    doc = await admin_get(http, url, f"/admin/reports/chargeback?period={month}")
    return usd_to_nano(doc["direct_total_usd"])


async def requests_in(http: aiohttp.ClientSession, url: str, path: str, expected: int) -> Any:
    """The report at `path` once the embedded aggregator has rolled up `expected` requests."""
    async with asyncio.timeout(10):
        while True:
            doc = await admin_get(http, url, path)
            if doc["total"]["requests"] == expected:
                return doc
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("moment", AWKWARD_MOMENTS, ids=lambda m: m.strftime("%Y-%m-%dT%H:%M:%S"))
async def test_spend_is_dated_budgeted_and_reported_by_the_clock(
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    moment: datetime,
) -> None:
    monkeypatch.setenv("SPENDGATE_STORE_URL", "memory://")
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    clock = FakeClock(moment)
    gw = await gateway_factory("budgets.yaml", teams=("alpha",), clock=clock)
    key, url = gw.keys["alpha"], gw.url
    later = moment + timedelta(seconds=1)
    async with aiohttp.ClientSession() as http:
        before = [await chat(http, url, key) for _ in range(3)]
        await gw.app[PIPELINE].accountant.drain()
        clock.set(later)
        after = [await chat(http, url, key) for _ in range(2)]
        await gw.app[PIPELINE].accountant.drain()

        # The daily budget counts each day's spend in its own period.
        budgets = gw.app[PIPELINE].accountant.registry.all("alpha")
        [status] = await gw.app[LEDGER].budget_status("alpha", budgets)
        same_day = later.date() == moment.date()
        assert status.spent_nano == sum(after) + (sum(before) if same_day else 0)

        # Reports default to the month (to date) of the clock's now, not the machine's.
        month = later.strftime("%Y-%m")
        same_month = month == moment.strftime("%Y-%m")
        expected = 5 if same_month else 2
        showback = await requests_in(http, url, "/admin/reports/showback", expected)
        assert showback["start"] == later.date().replace(day=1).isoformat()
        assert showback["end"] == later.date().isoformat()
        assert usd_to_nano(showback["total"]["cost_usd"]) == sum(after) + (
            sum(before) if same_month else 0
        )
        chargeback = await admin_get(http, url, "/admin/reports/chargeback")
        assert chargeback["period"] == month
        assert usd_to_nano(chargeback["direct_total_usd"]) == usd_to_nano(
            showback["total"]["cost_usd"]
        )
        if not same_month:  # the previous month keeps what was spent in it, to the nano-dollar
            assert await direct_total(http, url, moment.strftime("%Y-%m")) == sum(before)

        # An external cost posted without a date is dated by the clock, in the same month.
        cost = {"id": "gpu-1", "team": "alpha", "amount_usd": "2.5", "description": "GPU hours"}
        async with http.post(url + "/admin/costs", json=cost, headers=ADMIN) as response:
            assert response.status == 201, await response.text()
            posted = await response.json()
        assert posted["ts"] == later.isoformat().replace("+00:00", "Z")
        # ... and one dated a day back lands in that day's month.
        back = later - timedelta(days=1)
        dated = cost | {"id": "gpu-2", "ts": back.isoformat()}
        async with http.post(url + "/admin/costs", json=dated, headers=ADMIN) as response:
            assert response.status == 201, await response.text()
        gpu = usd_to_nano("2.5")
        expected_direct = {month: usd_to_nano(chargeback["direct_total_usd"]) + gpu}
        previous = back.strftime("%Y-%m")
        if previous == month:
            expected_direct[month] += gpu
        else:
            expected_direct[previous] = (
                sum(before) if previous == moment.strftime("%Y-%m") else 0
            ) + gpu
        async with asyncio.timeout(10):
            while True:  # until the embedded aggregator has applied both, each in its month
                seen = {m: await direct_total(http, url, m) for m in expected_direct}
                if seen == expected_direct:
                    break
                await asyncio.sleep(0.02)
