"""The admin budgets API over a real socket: list with live status, create, delete, validation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app.admin_budgets import admin_budget_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import BUDGETS, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.config.model import (
    BudgetsConfig,
    Config,
    ModelRoute,
    ServerConfig,
    StoreConfig,
    TeamConfig,
)
from gateway.store.connect import close_store, open_store
from gateway.types import SpendEvent
from tests.budgets.support import FakeClock, budget

ADMIN_KEY = "sk-sg-admin-test-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONFIG_BUDGET = budget("alpha-monthly", limit_nano=100_000_000_000)

Client = TestClient[web.Request, web.Application]


@dataclass
class StubLiveConfig:
    current: Config


def make_config() -> Config:
    return Config(
        source="<test>",
        server=ServerConfig(admin_key_hash=hashlib.sha256(ADMIN_KEY.encode()).hexdigest()),
        store=StoreConfig(),
        providers={},
        models={"gpt-4o-mini": ModelRoute("gpt-4o-mini", ()), "gpt-4o": ModelRoute("gpt-4o", ())},
        teams={"alpha": TeamConfig("alpha"), "beta": TeamConfig("beta")},
        budgets=BudgetsConfig(rules=(CONFIG_BUDGET,)),
    )


def make_app(clock: FakeClock, store_url: str = "memory://") -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(make_config())  # type: ignore[assignment]

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = await open_store(store_url)
        app[REDIS] = redis
        app[BUDGETS] = BudgetRegistry(redis, app[LIVE_CONFIG].current.budgets.rules)
        app[LEDGER] = BudgetLedger(redis, clock=clock)
        yield
        await close_store(redis)

    app.cleanup_ctx.append(store_ctx)
    app.add_routes(admin_budget_routes())
    return app


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[Client]:
    client = TestClient(TestServer(make_app(clock)))
    await client.start_server()
    yield client
    await client.close()


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    return dict((await resp.json())["error"])


async def test_auth_is_required(client: Client) -> None:
    for method, path in [
        ("GET", "/admin/budgets"),
        ("POST", "/admin/budgets"),
        ("DELETE", "/admin/budgets/x"),
    ]:
        await error_of(await client.request(method, path), 401)
        headers = {"Authorization": "Bearer sk-sg-wrong"}
        await error_of(await client.request(method, path, headers=headers), 401)


async def test_list_create_delete(client: Client, clock: FakeClock) -> None:
    app = client.app
    assert app is not None
    ledger = app[LEDGER]
    await ledger.settle(
        None,
        "alpha",
        "r1",
        [CONFIG_BUDGET],
        SpendEvent(
            event_id="e1", ts_ms=int(clock() * 1000), team="alpha", cost_nano=25_500_000_000
        ),
    )
    listing = await (await client.get("/admin/budgets", headers=AUTH)).json()
    (row,) = listing["data"]
    assert row == {
        "name": "alpha-monthly",
        "team": "alpha",
        "scope": "team",
        "match": None,
        "period": "monthly",
        "on_exceed": "block",
        "downgrade_to": None,
        "thresholds": [50, 75, 90, 100],
        "source": "config",
        "limit_usd": "100.00",
        "limit_nano": 100_000_000_000,
        "limit_tokens": None,
        "period_id": "m203103",
        "period_end": "2031-04-01T00:00:00Z",
        "spent_usd": "25.50",
        "spent_nano": 25_500_000_000,
        "reserved_usd": "0.00",
        "reserved_nano": 0,
        "remaining_usd": "74.50",
        "remaining_nano": 74_500_000_000,
        "spent_tokens": 0,
        "reserved_tokens": 0,
        "remaining_tokens": None,
        "pct": 25.5,
    }

    body = {
        "name": "beta-search-daily",
        "team": "beta",
        "scope": "project",
        "match": "search",
        "period": "daily",
        "limit_usd": "12.345",
        "limit_tokens": 1_000_000,
        "on_exceed": "downgrade",
        "downgrade_to": "gpt-4o-mini",
        "thresholds": [90, 50],
    }
    resp = await client.post("/admin/budgets", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["source"] == "admin" and created["limit_nano"] == 12_345_000_000
    assert created["thresholds"] == [50, 90] and created["period_id"] == "d20310314"
    assert created["remaining_tokens"] == 1_000_000

    # A number works as well as a string for USD, and the budget is enforced at once.
    resp = await client.post(
        "/admin/budgets",
        json={"name": "alpha-key", "team": "alpha", "scope": "key", "match": "key_0123456789ab",
              "period": "total", "limit_usd": 0.5},
        headers=AUTH,
    )  # fmt: skip
    assert resp.status == 201, await resp.text()
    assert [b.name for b in app[BUDGETS].all("alpha")] == ["alpha-monthly", "alpha-key"]

    names = [
        b["name"] for b in (await (await client.get("/admin/budgets", headers=AUTH)).json())["data"]
    ]
    assert names == ["alpha-monthly", "alpha-key", "beta-search-daily"]
    beta = await (await client.get("/admin/budgets?team=beta", headers=AUTH)).json()
    assert [b["name"] for b in beta["data"]] == ["beta-search-daily"]

    error = await error_of(await client.post("/admin/budgets", json=body, headers=AUTH), 400)
    assert error["code"] == "budget_exists"
    error = await error_of(
        await client.post("/admin/budgets", json={**body, "name": "alpha-monthly"}, headers=AUTH),
        400,
    )
    assert error["code"] == "budget_exists" and "config" in error["message"]

    error = await error_of(await client.delete("/admin/budgets/alpha-monthly", headers=AUTH), 400)
    assert error["code"] == "budget_declared_in_config"
    resp = await client.delete("/admin/budgets/beta-search-daily", headers=AUTH)
    assert await resp.json() == {"name": "beta-search-daily", "deleted": True}
    error = await error_of(
        await client.delete("/admin/budgets/beta-search-daily", headers=AUTH), 404
    )
    assert error["code"] == "budget_not_found"


VALID = {"name": "b", "team": "alpha", "scope": "team", "period": "daily", "limit_usd": "1"}


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"nmae": "x"}, "nmae", "unknown field 'nmae'"),
        ({"name": "has space"}, "name", "'name' is required"),
        ({"name": None}, "name", "'name' is required"),
        ({"team": "gamma"}, "team", "unknown team 'gamma'"),
        ({"scope": "org"}, "scope", "'scope' is required and must be one of"),
        ({"period": "hourly"}, "period", "'period' is required and must be one of"),
        ({"match": "x"}, "match", "must be absent for scope team"),
        ({"scope": "project"}, "match", "'match' is required for scope project"),
        ({"scope": "tag", "match": "exp"}, "match", "'name=value'"),
        ({"scope": "key", "match": "sk-sg-secret"}, "match", "key id"),
        ({"limit_usd": None}, "limit_usd", "set 'limit_usd', 'limit_tokens' or both"),
        ({"limit_usd": "-1"}, "limit_usd", "non-negative decimal"),
        ({"limit_usd": "NaN"}, "limit_usd", "non-negative decimal"),
        ({"limit_usd": "ten"}, "limit_usd", "non-negative decimal"),
        ({"limit_usd": True}, "limit_usd", "non-negative decimal"),
        ({"limit_usd": "0.0000000001"}, "limit_usd", "finer than a nano-dollar"),
        ({"limit_usd": "10000000"}, "limit_usd", "must be below"),
        ({"limit_tokens": 1.5}, "limit_tokens", "non-negative integer"),
        ({"limit_tokens": -3}, "limit_tokens", "non-negative integer"),
        ({"on_exceed": "explode"}, "on_exceed", "must be one of alert, block, downgrade"),
        ({"on_exceed": "downgrade"}, "downgrade_to", "must name a configured model"),
        (
            {"on_exceed": "downgrade", "downgrade_to": "gpt-5"},
            "downgrade_to",
            "gpt-4o, gpt-4o-mini",
        ),
        ({"downgrade_to": "gpt-4o"}, "downgrade_to", "only for on_exceed: downgrade"),
        ({"thresholds": [50, 50]}, "thresholds", "distinct integer percents"),
        ({"thresholds": [0]}, "thresholds", "distinct integer percents"),
        ({"thresholds": "50"}, "thresholds", "distinct integer percents"),
    ],
)
async def test_create_validates_strictly(
    client: Client, change: dict[str, Any], param: str, message: str
) -> None:
    body = {**VALID, **change}
    error = await error_of(await client.post("/admin/budgets", json=body, headers=AUTH), 400)
    assert message in error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("raw", "message"), [(b"{nope", "not valid JSON"), (b"[]", "JSON object")])
async def test_create_needs_a_json_object(client: Client, raw: bytes, message: str) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    error = await error_of(await client.post("/admin/budgets", data=raw, headers=headers), 400)
    assert message in error["message"]


async def test_list_rejects_unknown_query_parameters(client: Client) -> None:
    error = await error_of(await client.get("/admin/budgets?teams=alpha", headers=AUTH), 400)
    assert error["param"] == "teams"


async def test_store_unreachable_is_a_503(clock: FakeClock) -> None:
    client = TestClient(TestServer(make_app(clock, "redis://127.0.0.1:1/0")))
    await client.start_server()
    try:
        error = await error_of(await client.get("/admin/budgets", headers=AUTH), 503)
        assert "budget store is unreachable" in error["message"]
        resp = await client.post("/admin/budgets", json=VALID, headers=AUTH)
        await error_of(resp, 503)
    finally:
        await client.close()
