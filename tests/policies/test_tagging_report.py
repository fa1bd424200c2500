"""Tagging compliance end to end: traffic with and without the tags a policy requires goes
through a gateway; once the embedded aggregator has rolled it up, `GET
/admin/reports/tagging` and `spendgate report tagging` show each team's fully tagged share of
its spend, equal to the costs the responses carried."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest

from gateway.cli import build_parser
from gateway.reports.cli import run_async
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "hello there"}]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def report(gateway: Gateway, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=ADMIN) as http,
        http.get(f"{gateway.url}/admin/reports/tagging", params=params) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_the_report_shows_the_fully_tagged_share(
    gateway_factory: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await gateway_factory("policies.yaml")
    costs = {"tagged": Decimal(0), "untagged": Decimal(0)}
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        for i in range(6):
            workload = {"x-sg-workload": "search"} if i % 3 else {}
            reply = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, extra_headers=workload
            )
            costs["tagged" if workload else "untagged"] += Decimal(reply.headers["x-sg-cost-usd"])
    spend = costs["tagged"] + costs["untagged"]
    deadline = time.monotonic() + 20
    while True:  # the embedded aggregator rolls the events up on its own schedule
        status, document = await report(gateway)
        assert status == 200, document
        alpha = next(t for t in document["teams"] if t["team"] == "alpha")
        if Decimal(alpha["spend_usd"]) == spend or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert document["report"] == "tagging" and document["required"] is True
    assert Decimal(alpha["spend_usd"]) == spend
    assert Decimal(alpha["tagged_usd"]) == costs["tagged"]
    assert alpha["missing_usd"] == {"workload": str(costs["untagged"])}
    assert alpha["compliance"] == pytest.approx(float(costs["tagged"] / spend), abs=1e-6)
    beta = next(t for t in document["teams"] if t["team"] == "beta")
    assert beta["compliance"] is None  # no spend

    bad, error = await report(gateway, start="2026-11-01")
    assert bad == 400 and error["error"]["param"] == "start"

    args = build_parser().parse_args(
        ["report", "tagging", "--url", gateway.url, "--admin-key", ADMIN_KEY, "--format", "csv"]
    )
    assert await run_async(args, gateway.clock) == 0  # the period: the gateway's month so far
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "team,spend_usd,tagged_usd,untagged_usd,compliance_pct,missing"
    row = next(line for line in lines if line.startswith("alpha,"))
    assert row.split(",")[1:3] == [alpha["spend_usd"], alpha["tagged_usd"]]
