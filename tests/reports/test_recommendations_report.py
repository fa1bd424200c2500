"""`spendgate report recommendations` and `GET /admin/reports/recommendations` on a ledger the
aggregator built in a real Redis from the seeded events of tests/analytics/test_recommendations
(whose savings are computed by hand there), with an idle key and an admin budget in the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway.app.admin_reports import admin_report_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import BUDGETS, CLOCK, KEYRING, LIVE_CONFIG, REDIS
from gateway.budgets.registry import BudgetRegistry
from gateway.config.loader import load_text
from gateway.config.model import BudgetConfig, Config
from gateway.store.keys import Keyring
from tests.analytics.test_recommendations import CONFIG, alpha_events, beta_events
from tests.clock import T0
from tests.ledger import NOW, drain, produce
from tests.reports.test_admin_reports import ADMIN_KEY, StubLiveConfig
from tests.reports.test_report_cli import cli

SEPTEMBER_1 = T0.replace(month=9, day=1).timestamp()


def config_text(url: str) -> str:
    head = f"server:\n  admin_key: {ADMIN_KEY}\nstore:\n  url: {url}\n"
    return head + CONFIG


def config(url: str = "redis://unused") -> Config:
    return load_text(config_text(url), "<test>", env={})


async def seed(redis: Redis) -> str:
    """The seeded traffic, applied by the aggregator; returns the id of a key that was issued
    on 2026-09-01 and never used."""
    await produce(redis, alpha_events() + beta_events())
    await drain(redis)
    keyring = Keyring(redis, wall_clock=lambda: SEPTEMBER_1)
    _, info = await keyring.create("beta", name="old-job")
    return info.key_id


@pytest.fixture
async def server(redis: Redis) -> AsyncIterator[TestServer]:
    cfg = config()
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(cfg)  # type: ignore[assignment]
    app[REDIS] = redis
    app[CLOCK] = NOW
    app[KEYRING] = Keyring(redis, cfg.keys)
    app[BUDGETS] = BudgetRegistry(redis, cfg.budgets.rules)
    app.add_routes(admin_report_routes())
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


async def get(server: TestServer, query: str) -> tuple[int, bytes]:
    async with (
        ClientSession() as session,
        session.get(
            server.make_url(f"/admin/reports/recommendations{query}"),
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response,
    ):
        return response.status, await response.read()


async def test_the_admin_api_lists_the_hand_computed_savings(
    server: TestServer, redis: Redis
) -> None:
    idle = await seed(redis)
    status, body = await get(server, "?period=2026-11")
    assert status == 200, body
    document = orjson.loads(body)
    savings = {
        (r["kind"], r["team"], r["subject"]): r["monthly_saving_usd"] for r in document["data"]
    }
    assert savings == {
        ("enable_cache", "alpha", "big"): "0.737833333",
        ("tier_short_requests", "alpha", "big"): "0.096000000",
        ("prompt_caching", "alpha", "big"): "0.076800000",
        ("batch_api", "beta", "nightly"): "0.005000000",
        ("idle_key", "beta", idle): "0.000000000",
        ("no_budget", "alpha", "alpha"): "0.000000000",
        ("no_budget", "beta", "beta"): "0.000000000",
        ("no_alerts", "*", "alerts.webhooks"): "0.000000000",  # gamma's budget alerts nobody
    }
    assert document["monthly_saving_usd"] == "0.915633333"  # their sum
    status, body = await get(server, "?period=2026-11&team=beta&format=table")
    assert status == 200
    lines = body.decode().splitlines()
    assert lines[0] == "recommendations 2026-11, team beta (estimated monthly savings, USD)"
    assert [line.split()[:4] for line in lines[2:]] == [
        ["beta", "batch_api", "nightly", "0.005000000"],
        ["beta", "idle_key", idle, "0.000000000"],
        ["beta", "no_budget", "beta", "0.000000000"],
    ]


async def test_an_admin_budget_counts_and_a_revoked_key_is_not_idle(
    server: TestServer, redis: Redis
) -> None:
    idle = await seed(redis)
    await Keyring(redis).revoke(idle)
    # A budget set at run time (PUT /admin/budgets/...), not in the YAML: beta has one now.
    await server.app[BUDGETS].create(
        BudgetConfig("beta-cap", "beta", "team", None, "monthly", 5_000_000_000, None)
    )
    status, body = await get(server, "?start=2026-11-01&end=2026-11-30&team=beta")
    kinds = [r["kind"] for r in orjson.loads(body)["data"]]
    assert status == 200 and kinds == ["batch_api"]


async def test_bad_parameters_are_refused_with_openai_shaped_errors(server: TestServer) -> None:
    for query, param in (
        ("?period=2026-13", "period"),
        ("?start=2026-11-01", "start"),
        ("?period=2026-11&start=2026-11-01&end=2026-11-02", "start"),
        ("?format=xml", "format"),
    ):
        status, body = await get(server, query)
        assert status == 400, query
        assert orjson.loads(body)["error"]["param"] == param


async def test_the_cli_reads_a_shared_redis(
    redis: Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(redis)
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(redis_url))
    code, out, err = await cli(
        capsys, "recommendations", "--period", "2026-11", "--format", "json", "--config", str(path)
    )
    assert code == 0, err
    data = orjson.loads(out)["data"]
    assert data[0]["kind"] == "enable_cache" and data[0]["monthly_saving_usd"] == "0.737833333"
    assert "mode: always" in data[0]["change"]
    code, _, err = await cli(
        capsys,
        "recommendations",
        "--period",
        "2026-11",
        "--start",
        "2026-11-01",
        "--config",
        str(path),
    )
    assert code != 0 and "not both" in err
