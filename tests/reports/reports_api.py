"""The report endpoints on a real socket, as the scorecard and review tests use them: an app
with every report's dependencies on a fixed clock, a GET with the admin key, a team's part of a
report document."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway.analytics.outlook import Forecaster
from gateway.app import state
from gateway.app.admin_reports import admin_report_routes
from gateway.app.middleware import error_middleware
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.config.model import BudgetConfig, Config
from tests.clock import T0, FakeClock
from tests.reports.test_admin_reports import ADMIN_KEY, StubLiveConfig


@asynccontextmanager
async def reports_api(
    redis: Redis, config: Config, budgets: Sequence[BudgetConfig]
) -> AsyncIterator[str]:
    """The base URL of the report endpoints over `redis`, on a clock at T0."""
    app = web.Application(middlewares=[error_middleware])
    app[state.LIVE_CONFIG] = StubLiveConfig(config)  # type: ignore[assignment]
    app[state.REDIS] = redis
    app[state.CLOCK] = clock = FakeClock(T0)
    app[state.BUDGETS] = BudgetRegistry(redis, budgets)
    app[state.LEDGER] = BudgetLedger(redis, clock=clock)
    app[state.FORECASTER] = Forecaster()
    app.add_routes(admin_report_routes())
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


async def get(url: str, path: str, **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with session.get(url + path, params=params, headers=headers) as resp:
            return resp.status, await resp.text()


def team_of(document: dict[str, Any], team: str) -> dict[str, Any]:
    return next(t for t in document["teams"] if t["team"] == team)
