"""Realistic traffic through a real gateway (embedded store and aggregator, the mock upstream on a
real socket), then the month's FOCUS export, showback and chargeback from the admin API.

Five teams (`tests/fixtures/focus.yaml`): keys with tags from the keys API and the YAML, the
`x-sg-tags` header, a negotiated and a self-hosted price, cached-input and reasoning tokens,
cache hits, tiering, a cascade, a budget downgrade, budget 429s, a stream, embeddings, a shared
team, and external costs of every charge category."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway.app.state import KEYRING, PIPELINE
from gateway.types import usd_to_nano
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

TEAMS = ("alpha", "beta", "gamma", "delta", "platform")
CONFIG_KEY = "sk-sg-focus-alpha-batch-0123456789abcdef"  # alpha's key declared in the YAML
SHORT = [{"role": "user", "content": "What is a budget?"}]
OTHER = [{"role": "user", "content": "Explain chargeback to a new team lead"}]

# Posted with POST /admin/costs: one of each charge category.
EXTERNAL_COSTS: tuple[dict[str, Any], ...] = (
    {
        "id": "gpu-run-7",
        "team": "alpha",
        "amount_usd": "1234.567890123",
        "description": "GPU hours for fine-tuning run 7",
        "project": "search",
        "provider": "CoreWeave",
        "service_name": "GPU Cloud",
        "service_category": "Compute",
        "tags": {"run": "7", "cost_center": "cc-1001"},
    },
    {
        "id": "support-plan-2026",
        "team": "beta",
        "amount_usd": "99.99",
        "description": "Vendor support plan, monthly",
        "provider": "Acme AI",
        "charge_category": "Purchase",
    },
    {
        "id": "gpu-run-7-tax",
        "team": "alpha",
        "amount_usd": "12.5",
        "description": "Sales tax on GPU hours, run 7",
        "provider": "CoreWeave",
        "service_name": "GPU Cloud",
        "service_category": "Compute",
        "charge_category": "Tax",
    },
    {
        "id": "promo-credit",
        "team": "gamma",
        "amount_usd": "-20",
        "description": "Promotional credit",
        "provider": "Acme AI",
        "charge_category": "Credit",
    },
    {
        "id": "invoice-fix",
        "team": "delta",
        "amount_usd": "3.25",
        "description": "Late invoice correction",
        "provider": "Acme AI",
        "charge_category": "Adjustment",
    },
)


@dataclass(frozen=True)
class Export:
    month: str
    focus_csv: str
    rows: list[dict[str, str]]
    showback: dict[str, Any]
    chargeback: dict[str, Any]
    statuses: list[int]  # of every proxied request, in order


async def realistic_export(
    gateway_factory: GatewayFactory, external_costs: tuple[dict[str, Any], ...] = EXTERNAL_COSTS
) -> Export:
    gw = await gateway_factory("focus.yaml", teams=TEAMS)
    tagged, _ = await gw.app[KEYRING].create(
        "alpha", project="search", tags={"cost_center": "cc-1001", "experiment": "exp-a"}
    )
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def chat(key: str, model: str, messages: Any = SHORT, **extra: Any) -> None:
            headers = extra.pop("headers", {})
            body = {"model": model, "messages": messages, **extra}
            async with http.post(
                gw.base_url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}", **headers},
            ) as r:
                await r.read()
                statuses.append(r.status)

        alpha = gw.keys["alpha"]
        await chat(tagged, "gpt-4o", metadata={"mock_cached_tokens": "4"})
        await chat(tagged, "gpt-4o", headers={"x-sg-tags": "experiment=exp-a,ticket=FIN-42"})
        await chat(alpha, "gpt-4o", OTHER, headers={"x-sg-tags": "experiment=exp-b"})
        for _ in range(3):  # one miss, then two cache hits
            await chat(tagged, "gpt-4o-mini")
        await chat(alpha, "auto")  # tiering: served by gpt-4o-mini
        await chat(alpha, "auto", OTHER, headers={"x-sg-tier": "premium"})
        await chat(alpha, "smart", max_tokens=5)  # cascade: gpt-4o-mini cut off, then gpt-4o
        await chat(alpha, "o3-mini", metadata={"mock_reasoning_tokens": "12"})
        await chat(alpha, "gpt-4o", OTHER, stream=True)
        await chat(CONFIG_KEY, "house-llama")
        await chat(CONFIG_KEY, "gpt-4o-mini", OTHER)
        async with http.post(
            gw.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": ["a budget", "a forecast"]},
            headers={"Authorization": f"Bearer {alpha}"},
        ) as r:
            await r.read()
            statuses.append(r.status)
        for _ in range(3):  # over its budget: downgraded to gpt-4o-mini
            await chat(gw.keys["beta"], "gpt-4o", OTHER)
        for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):  # refused (429) until the mini
            await chat(gw.keys["gamma"], model, OTHER)
        await chat(gw.keys["delta"], "gpt-4o-mini", OTHER)
        for _ in range(2):
            await chat(gw.keys["platform"], "gpt-4o", OTHER)
        for cost in external_costs:
            async with http.post(
                gw.url + "/admin/costs",
                json=cost,
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ) as r:
                assert r.status == 201, await r.text()
        await gw.app[PIPELINE].accountant.drain()
        month = datetime.fromtimestamp(gw.clock(), UTC).strftime("%Y-%m")  # tests.clock's
        expected = len(statuses)
        external = sum(usd_to_nano(c["amount_usd"]) for c in external_costs)
        showback = await _until_rolled_up(http, gw, expected, external)
        chargeback = await _admin_json(http, gw, "chargeback", {"period": month})
        focus_csv = await _admin_text(http, gw, "focus", {"period": month, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(focus_csv)))
    return Export(month, focus_csv, rows, showback, chargeback, statuses)


async def _until_rolled_up(
    http: aiohttp.ClientSession, gw: Gateway, requests: int, external_nano: int
) -> dict[str, Any]:
    """Showback of the month so far, once the embedded aggregator has rolled up every event."""
    async with asyncio.timeout(20):
        while True:
            report = await _admin_json(http, gw, "showback", {})
            total = report["total"]
            if (
                total["requests"] >= requests
                and usd_to_nano(total["external_usd"]) == external_nano
            ):
                return report
            await asyncio.sleep(0.05)


async def _admin_json(
    http: aiohttp.ClientSession, gw: Gateway, kind: str, params: dict[str, str]
) -> dict[str, Any]:
    async with http.get(
        gw.url + f"/admin/reports/{kind}",
        params={**params, "format": "json"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as r:
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def _admin_text(
    http: aiohttp.ClientSession, gw: Gateway, kind: str, params: dict[str, str]
) -> str:
    async with http.get(
        gw.url + f"/admin/reports/{kind}",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as r:
        assert r.status == 200, await r.text()
        return await r.text()
