"""The maturity assessment on a seeded ledger in a real Redis, on a clock at T0 (window: October
6th to November 4th): alpha does everything a `run` team does; beta leaves half its spend
unallocated, has no budget and saves nothing (`crawl`); the organization is held back by beta.
Signals recomputed by hand from the seeded events; through the admin API and the CLI; and the
criteria table on its own, level by level."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.analytics.anomaly import Feedback
from gateway.analytics.maturity import CRITERIA, Signals, assess
from gateway.anomalies.records import AnomalyStore, Cursor
from gateway.config.model import (
    AlertsConfig,
    BudgetConfig,
    BudgetsConfig,
    Config,
    ReviewSchedule,
    TeamConfig,
    Webhook,
)
from gateway.config.policies import PoliciesConfig, PolicyScope, TagPolicy
from gateway.reports import cli as report_cli
from tests.anomalies.support import sample_anomaly
from tests.clock import T0, FakeClock
from tests.ledger import drain, history, produce
from tests.reports.reports_api import get, reports_api
from tests.reports.test_admin_reports import make_config
from tests.reports.test_forecast_report import parse, replace_args

USD = 1_000_000_000
BUDGETS = (BudgetConfig("alpha-monthly", "alpha", "team", None, "monthly", 5_000 * USD, None),)
WINDOW = (date(2026, 10, 6), date(2026, 11, 4))

ALPHA = [
    replace(e, list_cost_nano=e.cost_nano * 5 // 4, optimization="cache")
    for e in history("alpha", date(2026, 7, 1), WINDOW[1], 100.0, noise=0.0, project="search")
]
BETA = [
    replace(e, project=None) if i % 2 else e
    for i, e in enumerate(history("beta", *WINDOW, 10.0, noise=0.0, project="web"))
]


def _in_window(ts_ms: int) -> bool:
    day = datetime.fromtimestamp(ts_ms / 1000, UTC).date()
    return WINDOW[0] <= day <= WINDOW[1]


def config() -> Config:
    teams = dict(make_config().teams)
    teams["alpha"] = TeamConfig("alpha", units_name="orders", monthly_units=100)
    alerts = AlertsConfig(
        webhooks=(Webhook("finops", "https://hooks.example/x"),), review=ReviewSchedule()
    )
    # Every request must name its project (a tag policy over every team).
    tags = TagPolicy("projects", PolicyScope(), ("project",))
    return replace(
        make_config(),
        teams=teams,
        budgets=BudgetsConfig(rules=BUDGETS),
        alerts=alerts,
        policies=PoliciesConfig(tags=(tags,)),
    )


@pytest.fixture
async def seeded(redis: Redis) -> Redis:
    await produce(redis, ALPHA + BETA)
    await drain(redis)
    start = int(datetime(2026, 10, 20, tzinfo=UTC).timestamp())
    store = AnomalyStore(redis)
    await store.commit(
        Cursor(300, 0),
        {},
        [
            replace(sample_anomaly(), id="a-1", team="alpha", start_s=start),
            replace(sample_anomaly(), id="b-1", team="beta", start_s=start),
        ],
    )
    await store.set_feedback("a-1", Feedback("expected", "", start + 600))
    # Digests of three of the four last weeks (W41 to W44); W40's is older.
    for week in ("2026-W40", "2026-W42", "2026-W43", "2026-W44"):
        await redis.hset(rediskeys.review_digests(), week, "1")
    return redis


@pytest.fixture
async def api(seeded: Redis) -> AsyncIterator[str]:
    async with reports_api(seeded, config(), BUDGETS) as url:
        yield url


def _criteria(assessment: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["level"], c["criterion"]): c for c in assessment["criteria"]}


async def test_maturity_over_the_admin_api(api: str) -> None:
    status, text = await get(api, "/admin/reports/maturity")
    assert status == 200, text
    doc = orjson.loads(text)
    assert doc["window"] == {"start": "2026-10-06", "end": "2026-11-04"}
    alpha, beta = doc["teams"]
    assert (alpha["subject"], alpha["level"], alpha["next_level"], alpha["missing"]) == (
        "alpha",
        "run",
        None,
        [],
    )
    a = _criteria(alpha)
    assert a[("run", "allocation")]["evidence"] == "100.0 % of request spend named a project"
    assert a[("run", "tagging")]["evidence"] == (
        "100.0 % of spend carried the tags its tag policies require"
    )
    assert a[("run", "optimization")]["evidence"] == "optimizers saved 20.0 % of list cost"
    assert a[("run", "budgets")]["evidence"] == "1 budgets (1 block or downgrade)"
    assert a[("run", "anomalies")]["evidence"] == "1 of 1 anomalies given feedback"
    assert a[("run", "review cadence")]["evidence"] == (
        "digests posted 3 of the last 4 weeks; scheduled"
    )
    assert a[("run", "forecast")]["met"]  # a noise-free weekly pattern forecasts itself
    assert beta["level"] == "crawl" and beta["next_level"] == "walk"
    missing = {c["criterion"]: c["evidence"] for c in beta["missing"]}
    # Beta: every other event of the window had no project: half its spend, to the nano.
    unnamed = sum(e.cost_nano for e in BETA if e.project is None)
    assert unnamed * 2 == sum(e.cost_nano for e in BETA)
    assert missing["allocation"] == "50.0 % of request spend named a project"
    assert missing["tagging"] == "50.0 % of spend carried the tags its tag policies require"
    assert missing["budgets"] == "0 budgets (0 block or downgrade); no budget: beta"
    assert missing["optimization"] == "optimizers saved 0.0 % of list cost"
    assert "alerts" not in missing
    org = doc["organization"]
    assert (org["subject"], org["level"]) == ("*", "crawl")
    o = _criteria(org)
    spend = sum(e.cost_nano for e in ALPHA + BETA if _in_window(e.ts_ms))
    assert o[("walk", "allocation")]["evidence"] == (
        f"{100 * (spend - unnamed) / spend:.1f} % of request spend named a project"
    )
    assert o[("walk", "tagging")]["evidence"] == (
        f"{100 * (spend - unnamed) / spend:.1f} % of spend carried the tags its tag policies "
        "require"
    )
    assert o[("walk", "budgets")]["evidence"] == "1 budgets (1 block or downgrade); no budget: beta"
    assert o[("run", "anomalies")]["evidence"] == "1 of 2 anomalies given feedback"
    assert o[("run", "unit economics")]["evidence"] == "neither units nor revenue known: beta"


async def test_maturity_as_a_table_and_from_the_cli(
    api: str, seeded: Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, table = await get(api, "/admin/reports/maturity", format="table")
    assert status == 200
    assert table.splitlines()[0] == "maturity, 2026-10-06..2026-11-04"
    assert any(line.split()[:3] == ["alpha", "run", "level"] for line in table.splitlines())
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"store:\n  url: {redis_url}\n"
        "providers:\n  mock: {kind: openai, base_url: 'http://127.0.0.1:9/v1', auth: none}\n"
        "models:\n  gpt-4o:\n    deployments: [{provider: mock, model: gpt-4o}]\n"
        "teams:\n  alpha:\n    units: {name: orders, monthly: 100}\n"
        "    budgets: [{name: alpha-monthly, period: monthly, limit_usd: 5000}]\n"
        "  beta: {}\n  platform: {shared: true}\n"
        "alerts:\n  webhooks: [{name: finops, url: 'https://hooks.example/x'}]\n  review: {}\n"
        "policies:\n  tags: [{name: projects, require: project}]\n"
    )
    args = replace_args(parse("maturity", "--format", "json"), config=str(path))
    assert await report_cli.run_async(args, clock=FakeClock(T0)) == 0
    direct = orjson.loads(capsys.readouterr().out)
    _, text = await get(api, "/admin/reports/maturity")
    assert direct == orjson.loads(text)
    code = await report_cli.run_async(
        replace_args(parse("maturity", "--period", "2026-10"), config=str(path)), FakeClock(T0)
    )
    assert code == 1 and "no options" in capsys.readouterr().err


RUN = Signals(
    spend_nano=100,
    allocated_nano=95,
    tagged_pct=95.0,
    tag_policies=True,
    list_cost_nano=200,
    savings_nano=20,
    budgets=1,
    enforcing=1,
    unbudgeted=(),
    alerting=True,
    anomalies=5,
    handled=4,
    mape_pct=15.0,
    weeks_reviewed=3,
    reviews_scheduled=True,
    unit_economics=(),
)


@pytest.mark.parametrize(
    ("change", "level", "missing"),
    [
        ({}, "run", []),
        # Each run criterion just missed: walk, and that criterion is what is missing.
        ({"allocated_nano": 94}, "walk", ["allocation"]),
        ({"enforcing": 0}, "walk", ["budgets"]),
        ({"savings_nano": 19}, "walk", ["optimization"]),
        ({"handled": 3}, "walk", ["anomalies"]),
        ({"mape_pct": 15.1}, "walk", ["forecast"]),
        ({"weeks_reviewed": 2}, "walk", ["review cadence"]),
        ({"unit_economics": ("beta",)}, "walk", ["unit economics"]),
        ({"tagged_pct": 94.9}, "walk", ["tagging"]),
        # Without a tag policy nothing is required to walk, and run wants one.
        ({"tag_policies": False, "tagged_pct": None}, "walk", ["tagging"]),
        ({"tagged_pct": 79.9}, "crawl", ["tagging"]),
        # No anomalies: nothing to handle.
        ({"anomalies": 0, "handled": 0}, "run", []),
        # A walk criterion missed: crawl, whatever run's say.
        ({"allocated_nano": 79}, "crawl", ["allocation"]),
        ({"unbudgeted": ("beta",)}, "crawl", ["budgets"]),
        ({"alerting": False}, "crawl", ["alerts"]),
        ({"savings_nano": 0}, "crawl", ["optimization"]),
        ({"mape_pct": None}, "crawl", ["forecast"]),
        ({"mape_pct": 30.1, "allocated_nano": 50}, "crawl", ["allocation", "forecast"]),
    ],
)
def test_levels(change: dict[str, Any], level: str, missing: list[str]) -> None:
    result = assess("t", replace(RUN, **change))
    assert result.level == level
    assert [c.name for c in result.missing] == missing
    assert len(result.checks) == len(CRITERIA)
