"""Reports and external costs through the admin API on a real socket, against a real Redis:
auth, validation, formats, and an idempotent external-cost POST that reaches the reports."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.analytics.focus import FOCUS_COLUMNS
from gateway.app.admin_reports import admin_report_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import CLOCK, LIVE_CONFIG, REDIS
from gateway.config.model import (
    Allocation,
    Config,
    ServerConfig,
    SharedCost,
    StoreConfig,
    TeamConfig,
)
from tests.ledger import NOW, T0_MS, drain, event, produce

ADMIN_KEY = "sk-sg-admin-reports-test-0123456789"
MONTH = datetime.fromtimestamp(T0_MS / 1000, UTC).strftime("%Y-%m")
DAY = datetime.fromtimestamp(T0_MS / 1000, UTC).date().isoformat()


@dataclass
class StubLiveConfig:
    current: Config


def make_config() -> Config:
    return Config(
        source="<test>",
        server=ServerConfig(admin_key_hash=hashlib.sha256(ADMIN_KEY.encode()).hexdigest()),
        store=StoreConfig(url="redis://unused"),
        providers={},
        models={},
        teams={
            "alpha": TeamConfig("alpha"),
            "beta": TeamConfig("beta"),
            "platform": TeamConfig("platform", shared=True),
        },
        shared_costs=(SharedCost("platform-fee", 100_000_000_001, Allocation("even")),),
    )


def _cost(cost_id: str = "c", **fields: object) -> dict[str, object]:
    return {
        "id": cost_id,
        "team": "alpha",
        "amount_usd": "1",
        "description": f"cost {cost_id}",
        **fields,
    }


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, key: str | None = ADMIN_KEY, **kwargs: Any
    ) -> tuple[int, str, str]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(make_config())  # type: ignore[assignment]
    app[REDIS] = redis
    app[CLOCK] = NOW
    app.add_routes(admin_report_routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Api(str(server.make_url("")).rstrip("/"), session)
    await server.close()


async def test_external_cost_post_is_idempotent(api: Api, redis: Redis) -> None:
    body = {
        "id": "invoice-2026-11-0042",
        "team": "alpha",
        "amount_usd": "1234.567890123",
        "description": "GPU hours for training run 7",
        "project": "search",
        "tags": {"run": "7"},
        "ts": datetime.fromtimestamp(T0_MS / 1000, UTC).isoformat(),
    }
    status, _, text = await api.call("POST", "/admin/costs", json=body)
    assert status == 201, text
    first = orjson.loads(text)
    assert first["amount_usd"] == "1234.567890123"
    assert first["duplicate"] is False
    # The client retries (its response was lost): recognised, nothing added.
    status, _, text = await api.call("POST", "/admin/costs", json=body)
    assert status == 200
    again = orjson.loads(text)
    assert again["duplicate"] is True and again["event_id"] == first["event_id"]
    assert again["ts"] == first["ts"]
    stream = rediskeys.events_stream("alpha")
    assert await redis.xlen(stream) == 1
    assert await redis.sismember(rediskeys.streams_registry(), "alpha")
    # The same id for a different cost is refused.
    status, _, text = await api.call("POST", "/admin/costs", json={**body, "amount_usd": 1})
    assert status == 400 and "idempotency_key_reused" in text
    # A retry without `ts` keeps the first post's time.
    plain = {k: v for k, v in body.items() if k != "ts"} | {"id": "no-ts", "tags": {"run": "8"}}
    status, _, text = await api.call("POST", "/admin/costs", json=plain)
    assert status == 201
    status, _, text2 = await api.call("POST", "/admin/costs", json=plain)
    assert status == 200
    assert orjson.loads(text)["ts"] == orjson.loads(text2)["ts"] == "2026-11-05T11:30:00Z"
    assert await redis.xlen(stream) == 2
    # Applied, it shows in the reports: cost per training run includes its GPU bill.
    await drain(redis)
    status, _, text = await api.call(
        "GET", f"/admin/reports/showback?start={DAY}&end={DAY}&format=json"
    )
    assert status == 200
    doc = orjson.loads(text)
    alpha = next(t for t in doc["teams"] if t["team"] == "alpha")
    assert alpha["tags"]["run=7"]["cost_usd"] == "1234.567890123"
    assert alpha["tags"]["run=8"]["cost_usd"] == "1234.567890123"  # dated by the app's clock
    assert alpha["external_usd"] == "2469.135780246"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"team": "alpha", "amount_usd": "1", "description": "x"}, "id"),
        ({"id": "a b", "team": "alpha", "amount_usd": "1", "description": "x"}, "id"),
        ({"id": "a", "team": "nobody", "amount_usd": "1", "description": "x"}, "team"),
        ({"id": "a", "team": "alpha", "amount_usd": "-1", "description": "x"}, "amount_usd"),
        ({"id": "a", "team": "alpha", "amount_usd": "NaN", "description": "x"}, "amount_usd"),
        ({"id": "a", "team": "alpha", "amount_usd": "ten", "description": "x"}, "amount_usd"),
        ({"id": "a", "team": "alpha", "amount_usd": True, "description": "x"}, "amount_usd"),
        ({"id": "a", "team": "alpha", "amount_usd": "1"}, "description"),
        ({"id": "a", "team": "alpha", "amount_usd": "1", "description": "x", "ts": "soon"}, "ts"),
        ({"id": "a", "team": "alpha", "amount_usd": "1", "description": "x", "ts": 1}, "ts"),
        ({"id": "a", "team": "alpha", "amount_usd": "1", "description": "x", "cost": 1}, "cost"),
        ({"id": "a", "team": "alpha", "amount_usd": "1", "description": "x", "tags": [1]}, "tags"),
        (_cost(charge_category="Refund"), "charge_category"),
        (_cost(charge_category="Credit"), "amount_usd"),  # a credit is negative
        (_cost(charge_category="Tax", amount_usd="-1"), "amount_usd"),
        (_cost(charge_category="Adjustment", amount_usd="0"), "amount_usd"),
        (_cost(service_category="Compute Engines"), "service_category"),
        (
            _cost(service_category="Compute", service_subcategory="Generative AI"),
            "service_subcategory",
        ),
        (_cost(service_name=""), "service_name"),
        # The allocation rows of the config's shared cost use this service as "Other".
        (_cost(service_name="platform-fee"), "service_name"),
    ],
)
async def test_external_cost_validation(
    api: Api, redis: Redis, body: dict[str, object], param: str
) -> None:
    status, _, text = await api.call("POST", "/admin/costs", json=body)
    assert status == 400, text
    assert orjson.loads(text)["error"]["param"] == param
    assert await redis.xlen(rediskeys.events_stream("alpha")) == 0


async def test_external_costs_carry_their_focus_classification(api: Api, redis: Redis) -> None:
    posts = [
        _cost("vm", amount_usd="120.5", provider="CoreWeave", service_category="Compute"),
        _cost(
            "vat",
            amount_usd="24.1",
            provider="CoreWeave",
            charge_category="Tax",
            service_category="Compute",
        ),
        _cost("promo", amount_usd="-20", provider="Acme AI", charge_category="Credit"),
        _cost("fix", amount_usd="-3.25", charge_category="Adjustment", service_name="Ops"),
        _cost("credits", amount_usd="500", provider="Acme AI", charge_category="Purchase"),
    ]
    for body in posts:
        status, _, text = await api.call("POST", "/admin/costs", json=body)
        assert status == 201, text
    # A service keeps the category it was first posted with.
    clash = _cost("disk", provider="CoreWeave", service_category="Storage")
    status, _, text = await api.call("POST", "/admin/costs", json=clash)
    assert status == 400 and orjson.loads(text)["error"]["code"] == "service_category_conflict"
    await drain(redis)
    status, _, text = await api.call("GET", f"/admin/reports/focus?period={MONTH}&format=json")
    assert status == 200
    rows = {r["ChargeDescription"]: r for r in orjson.loads(text)["rows"]}
    vm = rows["cost vm"]
    assert (vm["ChargeCategory"], vm["ServiceName"], vm["ServiceCategory"]) == (
        "Usage",
        "CoreWeave",
        "Compute",
    )
    assert vm["ServiceSubcategory"] == "Other (Compute)" and vm["ConsumedQuantity"] == "1.0"
    assert rows["cost vat"]["ChargeCategory"] == "Tax" and rows["cost vat"]["SkuId"] == ""
    assert rows["cost promo"]["BilledCost"] == "-20.000000000"
    fix = rows["cost fix"]
    assert (fix["ServiceName"], fix["ProviderName"]) == ("Ops", "internal")
    assert fix["ServiceSubcategory"] == "Generative AI"
    credits = rows["cost credits"]
    assert (credits["BilledCost"], credits["EffectiveCost"]) == ("500.000000000", "0.000000000")


async def test_reports_need_the_admin_key(api: Api) -> None:
    status, _, _ = await api.call("GET", "/admin/reports/showback", key=None)
    assert status == 401
    status, _, _ = await api.call("GET", "/admin/reports/chargeback", key="sk-sg-wrong")
    assert status == 401
    status, _, _ = await api.call("POST", "/admin/costs", key=None, json={})
    assert status == 401


async def test_report_query_validation(api: Api) -> None:
    for path, param in (
        ("/admin/reports/chargeback?period=2026-13", "period"),
        ("/admin/reports/chargeback?period=November", "period"),
        ("/admin/reports/showback?start=2026-11-05", "start"),
        ("/admin/reports/showback?start=2026-11-05&end=2026-11-01", "start"),
        ("/admin/reports/showback?start=2025-01-01&end=2026-11-01", "start"),
        ("/admin/reports/focus?format=xml", "format"),
        ("/admin/reports/focus?month=2026-11", "month"),
    ):
        status, _, text = await api.call("GET", path)
        assert status == 400, (path, text)
        assert orjson.loads(text)["error"]["param"] == param


async def test_chargeback_and_focus_over_http(api: Api, redis: Redis) -> None:
    events = [
        event(i, team=t, cost_nano=c)
        for i, (t, c) in enumerate(
            [("alpha", 1_000_000_001), ("beta", 3), ("platform", 10), ("alpha", 7)]
        )
    ]
    await produce(redis, events)
    await drain(redis)
    status, ctype, text = await api.call("GET", f"/admin/reports/chargeback?period={MONTH}")
    assert status == 200 and ctype.startswith("application/json")
    doc = orjson.loads(text)
    totals = {s["team"]: s["total_usd"] for s in doc["statements"]}
    assert totals["platform"] == "0.000000000"
    assert doc["total_usd"] == "101.000000022"  # 1.000000021 direct + 100.000000001 fee
    nanos = sum(int(v.replace(".", "")) for v in totals.values())
    assert nanos == 1_000_000_021 + 100_000_000_001
    status, ctype, text = await api.call(
        "GET", f"/admin/reports/chargeback?period={MONTH}&format=csv"
    )
    assert status == 200 and ctype.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["team"] for r in rows] == ["alpha", "beta", "platform", "*"]
    assert rows[-1]["total_usd"] == "101.000000022"
    status, _, table = await api.call(
        "GET", f"/admin/reports/chargeback?period={MONTH}&format=table"
    )
    assert status == 200 and "platform-fee_usd" in table.splitlines()[1]
    status, ctype, text = await api.call("GET", f"/admin/reports/focus?period={MONTH}")
    assert status == 200 and ctype.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == FOCUS_COLUMNS
    # Charges and the shared fee's allocation rows: what chargeback bills, to the nano.
    assert sum(int(r["BilledCost"].replace(".", "")) for r in rows) == 101_000_000_022
    fee = [r for r in rows if r["x_AllocatedFrom"] == "platform-fee"]
    assert sorted(r["SubAccountId"] for r in fee) == ["alpha", "beta"]
