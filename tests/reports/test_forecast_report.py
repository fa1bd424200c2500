"""The forecast report over two months of settled spend in a real Redis, on a clock fixed at T0:
through the admin API on a real socket (JSON, CSV, table, validation) and the CLI, straight
from the store and through the API. Its month-end forecast is held against the month the test
generated but did not settle, and its budgets against their counters."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway.analytics.outlook import Forecaster
from gateway.app import state
from gateway.app.admin_reports import admin_report_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import CLOCK, FORECASTER, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.config.model import BudgetConfig, BudgetsConfig, Config
from gateway.reports import cli as report_cli
from tests.clock import T0, FakeClock
from tests.ledger import drain, history
from tests.reports.test_admin_reports import ADMIN_KEY, StubLiveConfig, make_config

USD = 1_000_000_000
TODAY = T0.date()
NOVEMBER_END = date(2026, 11, 30)
BUDGETS = (
    BudgetConfig("alpha-monthly", "alpha", "team", None, "monthly", 2_000 * USD, None),
    BudgetConfig("alpha-ranking", "alpha", "project", "ranking", "weekly", 10_000 * USD, 10**9),
)
CONFIG = """\
server:
  admin_key: {admin_key}
store:
  url: {url}
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}}
models:
  gpt-4o:
    deployments: [{{provider: mock, model: gpt-4o}}]
teams:
  alpha:
    budgets:
      - {{name: alpha-monthly, period: monthly, limit_usd: 2000}}
      - {{name: alpha-ranking, scope: project, match: ranking, period: weekly, limit_usd: 10000,
          limit_tokens: 1000000000}}
  beta: {{}}
"""


def config() -> Config:
    return replace(make_config(), budgets=BudgetsConfig(rules=BUDGETS))


def alpha(first: date, last: date) -> list:  # type: ignore[type-arg]
    return history("alpha", first, last, 100.0, seed=4, project="ranking")


@pytest.fixture
async def spent(redis: Redis) -> FakeClock:
    """Alpha's spend since September and beta's since October, up to T0, settled against
    alpha's budgets and rolled up on a clock at T0."""
    clock = FakeClock(T0)
    ledger = BudgetLedger(redis, clock=clock)
    events = alpha(date(2026, 9, 1), TODAY) + history("beta", date(2026, 10, 1), TODAY, 30.0)
    for e in events:
        rules = [b for b in BUDGETS if b.team == e.team]
        await ledger.settle(None, e.team, e.request_id, rules, e)
    await drain(redis, clock=clock)
    return clock


@pytest.fixture
async def api(redis: Redis, spent: FakeClock) -> AsyncIterator[str]:
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(config())  # type: ignore[assignment]
    app[REDIS] = redis
    app[CLOCK] = spent
    app[state.BUDGETS] = BudgetRegistry(redis, BUDGETS)
    app[LEDGER] = BudgetLedger(redis, clock=spent)
    app[FORECASTER] = Forecaster()
    app.add_routes(admin_report_routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def get(url: str, path: str, key: str = ADMIN_KEY) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_the_forecast_over_the_admin_api(api: str) -> None:
    status, kind, text = await get(api, "/admin/forecast?days=10")
    assert status == 200 and kind.startswith("application/json")
    doc = orjson.loads(text)
    assert doc["as_of"] == "2026-11-05T10:30:00Z" and doc["horizon_days"] == 10
    assert doc["history"] == {"first_day": "2026-07-08", "last_day": "2026-11-04"}
    teams = {t["team"]: t for t in doc["teams"]}
    assert sorted(teams) == ["alpha", "beta", "platform"]
    assert teams["platform"]["model"] is None and teams["platform"]["month"]["forecast_usd"] is None
    a = teams["alpha"]
    assert a["history_days"] == 65 and a["model"].startswith("ETS(")
    assert a["accuracy"]["mape_pct"] < 12 and a["accuracy"]["points"] == 196
    assert [d["date"] for d in a["daily"]] == [
        (TODAY + timedelta(days=i)).isoformat() for i in range(10)
    ]
    # What the test generated for the rest of November, and did not settle, is in the range.
    rest = alpha(TODAY + timedelta(days=1), NOVEMBER_END)
    november = float(a["month"]["to_date_usd"]) + sum(e.cost_nano for e in rest) / USD
    month = a["month"]
    assert float(month["low95_usd"]) <= november <= float(month["high95_usd"])
    assert abs(float(month["forecast_usd"]) - november) / november < 0.05
    total = doc["total"]["month"]
    assert float(total["forecast_usd"]) == pytest.approx(
        float(month["forecast_usd"]) + float(teams["beta"]["month"]["forecast_usd"]), rel=0.03
    )
    monthly, ranking = a["budgets"]
    assert (monthly["name"], monthly["period_id"], monthly["will_exceed"]) == (
        "alpha-monthly",
        "m202611",
        True,
    )
    (usd,) = monthly["limits"]
    assert Decimal(usd["spent_usd"]) == Decimal(month["to_date_usd"])  # the counter agrees
    assert usd["status"] == "runs_out" and usd["exhausted_at"] < "2026-12-01T00:00:00Z"
    assert ranking["will_exceed"] is False and ranking["exhausted_at"] is None
    assert [limit["unit"] for limit in ranking["limits"]] == ["usd", "tokens"]
    assert ranking["limits"][1]["spent_tokens"] == 8 * 120  # Mon-Thu, two events a day


async def test_the_forecast_as_a_table_and_as_csv(api: str) -> None:
    status, kind, text = await get(api, "/admin/forecast?team=alpha&days=7&format=csv")
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["scope"], r["name"], r["unit"]) for r in rows] == [
        ("team", "alpha", "usd"),
        ("budget", "alpha-monthly", "usd"),
        ("budget", "alpha-ranking", "usd"),
        ("budget", "alpha-ranking", "tokens"),
    ]
    team = rows[0]
    assert float(team["low80"]) <= float(team["forecast"]) <= float(team["high80"])
    assert team["next_7d"] and team["period"] == "2026-11"
    assert rows[1]["limit"] == "2000.00" and rows[1]["runs_out_at"].startswith("2026-11-")
    status, _, text = await get(api, "/admin/forecast?format=table")
    lines = text.splitlines()
    assert lines[0].startswith("forecast 2026-11-05..2026-12-04 as of 2026-11-05T10:30:00Z")
    assert lines[1].split()[:5] == ["team", "scope", "name", "period", "unit"]
    assert lines[-1].split()[:3] == ["*", "total", "*"]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("team=nobody", 404, "team_not_found"),
        ("days=0", 400, "invalid_request"),
        ("days=367", 400, "invalid_request"),
        ("days=ten", 400, "invalid_request"),
        ("horizon=3", 400, "invalid_request"),
        ("format=xml", 400, "invalid_request"),
    ],
)
async def test_forecast_queries_are_checked(api: str, query: str, status: int, code: str) -> None:
    got, kind, text = await get(api, f"/admin/forecast?{query}")
    assert (got, orjson.loads(text)["error"]["code"]) == (status, code)
    assert kind.startswith("application/json")
    assert (await get(api, "/admin/forecast", key="sk-sg-wrong"))[0] == 401


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate report")
    report_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def test_the_forecast_from_the_cli(
    api: str,
    spent: FakeClock,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(url=redis_url, admin_key=ADMIN_KEY))
    args = parse("forecast", "--team", "alpha", "--days", "5", "--format", "json")
    code = await report_cli.run_async(replace_args(args, config=str(path)), clock=spent)
    direct, err = capsys.readouterr()
    assert code == 0, err
    via_api = parse("forecast", "--team", "alpha", "--days", "5", "--format", "json")
    code = await report_cli.run_async(replace_args(via_api, url=api, admin_key=ADMIN_KEY))
    through, err = capsys.readouterr()
    assert code == 0, err
    # The same report whichever way it is read (the config's budgets are the API's).
    assert orjson.loads(direct) == orjson.loads(through)
    assert orjson.loads(direct)["teams"][0]["budgets"][0]["name"] == "alpha-monthly"
    for argv, message in (
        (("forecast", "--period", "2026-11"), "a forecast looks ahead from now"),
        (("showback", "--team", "alpha"), "--team is for forecasts"),
        (("forecast", "--team", "nobody"), "unknown team 'nobody'"),
        (("forecast", "--days", "0"), "days must be from 1 to 366"),
    ):
        code = await report_cli.run_async(replace_args(parse(*argv), config=str(path)), spent)
        assert code == 1 and message in capsys.readouterr().err


def replace_args(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


async def test_a_team_reads_its_own_forecast_as_the_admin_report_has_it(
    redis: Redis, spent: FakeClock
) -> None:
    """The team API's forecast is the team's entry of the forecast report, its model included,
    read with the team's own key (a real socket, the keyring in the store)."""
    from gateway.app.openapi import admin_routes
    from gateway.app.state import KEYRING
    from gateway.store.keys import Keyring

    keyring = Keyring(redis, (), 30.0)
    alpha_key, _ = await keyring.create("alpha")
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(config())  # type: ignore[assignment]
    app[REDIS], app[CLOCK], app[KEYRING] = redis, spent, keyring
    app[state.BUDGETS] = BudgetRegistry(redis, BUDGETS)
    app[LEDGER] = BudgetLedger(redis, clock=spent)
    app[FORECASTER] = Forecaster()
    app.add_routes(admin_routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        status, _, text = await get(url, "/admin/forecast?team=alpha&days=1")
        assert status == 200, text
        [expected] = orjson.loads(text)["teams"]
        status, _, text = await get(url, "/v1/spendgate/usage", key=alpha_key)
        assert status == 200, text
        forecast = orjson.loads(text)["forecast"]
        assert forecast["as_of"] == "2026-11-05T10:30:00Z"
        assert expected["model"].startswith("ETS(") and expected["history_days"] == 65
        for name in ("model", "history_days", "accuracy", "month", "budgets"):
            assert forecast[name] == expected[name], name
        assert forecast["month"]["forecast_usd"] is not None
        assert {b["name"] for b in forecast["budgets"]} == {"alpha-monthly", "alpha-ranking"}
        status, _, text = await get(url, "/v1/spendgate/usage?team=beta", key=alpha_key)
        assert status == 403 and orjson.loads(text)["error"]["code"] == "team_forbidden"
    finally:
        await server.close()
