"""The admin budgets API over a real socket: list with live status, create, delete, validation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app.admin_budgets import admin_budget_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import BUDGETS, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.config.loader import load_text
from gateway.config.model import (
    BudgetsConfig,
    Config,
    ModelRoute,
    ServerConfig,
    StoreConfig,
    TeamConfig,
)
from gateway.errors import ConfigError
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
        budgets=BudgetsConfig(rules=(CONFIG_BUDGET,), thresholds=(50, 75, 90, 100)),
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
        "thresholds": [50, 90],
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


VALID = {"name": "b", "team": "alpha", "period": "daily", "limit_usd": "1"}
YAML = """\
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}
models:
  gpt-4o-mini: {deployments: [{provider: mock, model: gpt-4o-mini}]}
  gpt-4o: {deployments: [{provider: mock, model: gpt-4o}]}
teams: {alpha: {}, beta: {}}
budgets:
  rules:
    - %s
"""


def yaml_problems(body: dict[str, Any]) -> str:
    """What the config loader says of `body` as a `budgets.rules[]` entry, as the API says it."""
    with pytest.raises(ConfigError) as info:
        load_text(YAML % orjson.dumps(body).decode(), "<yaml>")
    prefix = "budgets.rules[0]."
    return "; ".join(
        f"{path.removeprefix(prefix)}: {reason.removesuffix(' (line 9)')}"
        for path, reason in info.value.problems
    )


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"nmae": "x"}, "nmae", "unknown key 'nmae' (did you mean 'name'?)"),
        ({"name": "has space"}, "name", "budget names use only A-Z, a-z, 0-9, _, . and -"),
        ({"name": "n" * 101}, "name", "must be at most 100 characters long"),
        ({"name": None}, "name", "required key is missing"),
        ({"team": "gamma"}, "team", "team 'gamma' is not defined in teams"),
        ({"scope": "org"}, "scope", "expected one of 'key', 'team', 'project', 'tag'"),
        ({"period": "hourly"}, "period", "expected one of 'daily', 'weekly'"),
        ({"match": "x"}, "match", "only allowed when scope is not 'team'"),
        ({"scope": "project"}, "match", "required when scope is 'project'"),
        ({"scope": "tag", "match": "exp"}, "match", "expected key=value"),
        ({"scope": "key", "match": "sk-sg-secret"}, "match", "no key named"),
        ({"limit_usd": None}, "limit_usd", "give limit_usd, limit_tokens or both"),
        ({"limit_usd": "0"}, "limit_usd", "must be greater than 0"),
        ({"limit_usd": "-1"}, "limit_usd", "must not be negative"),
        ({"limit_usd": "NaN"}, "limit_usd", "expected a USD amount"),
        ({"limit_usd": "ten"}, "limit_usd", "expected a USD amount"),
        ({"limit_usd": True}, "limit_usd", "expected a USD amount"),
        ({"limit_usd": "0.0000000001"}, "limit_usd", "more than 9 decimals"),
        ({"limit_usd": "10000000"}, "limit_usd", "must be at most 9007199.254740991"),
        ({"limit_tokens": 1.5}, "limit_tokens", "expected an integer"),
        ({"limit_tokens": 0}, "limit_tokens", "must be at least 1"),
        ({"on_exceed": "explode"}, "on_exceed", "expected one of 'block', 'downgrade', 'alert'"),
        ({"on_exceed": "downgrade"}, "downgrade_to", "required when on_exceed is 'downgrade'"),
        (
            {"on_exceed": "downgrade", "downgrade_to": "gpt-5"},
            "downgrade_to",
            "model 'gpt-5' is not defined in models",
        ),
        ({"downgrade_to": "gpt-4o"}, "downgrade_to", "only allowed when on_exceed is 'downgrade'"),
        ({"thresholds": [50, 50]}, "thresholds[1]", "must be greater than the value before it"),
        ({"thresholds": [90, 50]}, "thresholds[1]", "must be greater than the value before it"),
        ({"thresholds": [0]}, "thresholds[0]", "must be at least 1"),
        ({"thresholds": "50"}, "thresholds", "expected a list"),
    ],
)
async def test_the_api_refuses_what_the_yaml_refuses_in_its_words(
    client: Client, change: dict[str, Any], param: str, message: str
) -> None:
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    error = await error_of(await client.post("/admin/budgets", json=body, headers=AUTH), 400)
    assert message in error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    # One validator: the config loader says exactly the same of the same budget.
    assert error["message"] == yaml_problems(body)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"scope": "project", "match": "search", "limit_usd": 12.5},
        {"scope": "tag", "match": "experiment=rerank", "limit_tokens": 5000, "limit_usd": None},
        {"scope": "key", "match": "key_0123456789ab", "period": "total", "thresholds": []},
        {"on_exceed": "downgrade", "downgrade_to": "gpt-4o-mini", "thresholds": [80, 100, 150]},
        {"name": "n" * 100, "on_exceed": "alert", "limit_usd": "9007199.254740991"},
    ],
)
async def test_the_api_accepts_what_the_yaml_accepts(
    client: Client, change: dict[str, Any]
) -> None:
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    config = load_text(YAML % orjson.dumps(body).decode(), "<yaml>")
    (from_yaml,) = config.budgets.rules
    resp = await client.post("/admin/budgets", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    app = client.app
    assert app is not None
    created = app[BUDGETS].get(body["name"])
    # Scope defaults to team and thresholds to the config's, as in the YAML.
    assert created == replace(from_yaml, source="admin")


async def test_put_creates_replaces_and_keeps_the_periods_spend(
    client: Client, clock: FakeClock
) -> None:
    app = client.app
    assert app is not None
    body = {"team": "alpha", "period": "monthly", "limit_usd": "10"}
    resp = await client.put("/admin/budgets/alpha-cap", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    (rule,) = [b for b in app[BUDGETS].all("alpha") if b.name == "alpha-cap"]
    spend = SpendEvent(event_id="e1", ts_ms=int(clock() * 1000), team="alpha", cost_nano=4 * 10**9)
    await app[LEDGER].settle(None, "alpha", "r1", [rule], spend)
    # Raising the limit keeps what was spent in the period.
    resp = await client.put(
        "/admin/budgets/alpha-cap", json={**body, "limit_usd": "25", "name": "alpha-cap"},
        headers=AUTH,
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    replaced = await resp.json()
    assert (replaced["limit_usd"], replaced["spent_usd"]) == ("25.00", "4.00")
    assert replaced["remaining_nano"] == 21 * 10**9
    assert [b.limit_nano for b in app[BUDGETS].all("alpha") if b.name == "alpha-cap"] == [
        25 * 10**9
    ]
    # The path names the budget: a different name in the body is refused.
    error = await error_of(
        await client.put("/admin/budgets/alpha-cap", json={**body, "name": "x"}, headers=AUTH),
        400,
    )
    assert error["param"] == "name" and "differs from the path" in error["message"]
    # A config budget changes only with the YAML.
    error = await error_of(
        await client.put("/admin/budgets/alpha-monthly", json=body, headers=AUTH), 400
    )
    assert error["code"] == "budget_declared_in_config"
    assert "teams.<team>.budgets or budgets.rules" in error["message"]


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
