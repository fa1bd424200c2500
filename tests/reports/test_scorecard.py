"""The scorecard on a seeded ledger in a real Redis, every figure computed by hand: October
2026 seen on a clock at T0 (November 5th), against September; its budgets, refusal counts,
anomalies (two at the month's edges), unit costs and forecast. Through the admin API on a
real socket and the CLI; the month arithmetic at the awkward moments."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from gateway.analytics.anomaly import Anomaly, Feedback
from gateway.analytics.scorecard import comparison, forecast_month
from gateway.anomalies.records import AnomalyStore, Cursor
from gateway.budgets.ledger import BudgetLedger
from gateway.config.model import BudgetConfig, BudgetsConfig, Config, TeamConfig
from gateway.config.policies import PoliciesConfig, PolicyScope, TagPolicy
from gateway.reports import cli as report_cli
from tests.anomalies.support import sample_anomaly
from tests.clock import T0, FakeClock
from tests.ledger import drain, event, history, produce
from tests.reports.reports_api import get, reports_api, team_of
from tests.reports.test_admin_reports import ADMIN_KEY, make_config
from tests.reports.test_forecast_report import parse, replace_args

USD = 1_000_000_000
BUDGETS = (
    BudgetConfig("alpha-daily", "alpha", "team", None, "daily", 3_500_000_000, None),
    BudgetConfig("alpha-search", "alpha", "project", "search", "monthly", 10 * USD, None),
)


def _ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def config() -> Config:
    base = make_config()
    teams = dict(base.teams)
    teams["alpha"] = TeamConfig("alpha", units_name="orders", monthly_units=1000)
    # Alpha's requests must name their project (a tag policy); beta's need nothing.
    tags = TagPolicy("alpha-projects", PolicyScope(teams=frozenset({"alpha"})), ("project",))
    return replace(
        base,
        teams=teams,
        budgets=BudgetsConfig(rules=BUDGETS),
        policies=PoliciesConfig(tags=(tags,)),
    )


BETA_HISTORY = history("beta", date(2026, 6, 1), date(2026, 10, 31), 10.0, noise=0.0)
BETA_OCTOBER = sum(e.cost_nano for e in BETA_HISTORY if e.ts_ms >= _ms(2026, 10, 1))


def _anomaly(n: int, start_s: int) -> Anomaly:
    return replace(sample_anomaly(), id=f"an-{n}", start_s=start_s, end_s=start_s + 300)


@pytest.fixture
async def seeded(redis: Redis) -> Redis:
    events = [
        # September: 2 USD (the month compared with).
        event(1, ts_ms=_ms(2026, 9, 10, 12), cost_nano=2 * USD, list_cost_nano=2 * USD),
        # October: 3 + 3 on gpt-4o for project search (1 USD saved each by tiering) on the 3rd,
        # 1 on gpt-4o-mini without a project on the 20th.
        event(
            2,
            ts_ms=_ms(2026, 10, 3, 9),
            cost_nano=3 * USD,
            list_cost_nano=4 * USD,
            optimization="tiering",
        ),
        event(
            3,
            ts_ms=_ms(2026, 10, 3, 10),
            cost_nano=3 * USD,
            list_cost_nano=4 * USD,
            optimization="tiering",
        ),
        event(
            4,
            ts_ms=_ms(2026, 10, 20, 23, 59),
            cost_nano=USD,
            list_cost_nano=USD,
            requested_model="gpt-4o-mini",
            served_model="gpt-4o-mini",
            project=None,
            workload="nightly",
        ),
        # November: not October's.
        event(5, ts_ms=_ms(2026, 11, 1), cost_nano=50 * USD, list_cost_nano=50 * USD),
    ]
    await produce(redis, events + BETA_HISTORY)
    await drain(redis)
    # Refusals counted on the ledger's clock: two in October, one on November 1st 00:00.
    clock = FakeClock(datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))
    ledger = BudgetLedger(redis, clock=clock)
    await ledger.count_refusal("alpha", "alpha-daily", "block")
    await ledger.count_refusal("alpha", "alpha-daily", "block")
    await ledger.count_refusal("alpha", "alpha-search", "downgrade")
    clock.set(datetime(2026, 11, 1, tzinfo=UTC))
    await ledger.count_refusal("alpha", "alpha-daily", "block")
    store = AnomalyStore(redis)
    october = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
    november = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    anomalies = [
        _anomaly(1, october - 300),  # September's last bucket: not October's
        _anomaly(2, october),  # October's first bucket
        _anomaly(3, november - 300),  # October's last bucket
        _anomaly(4, november),  # November's
    ]
    await store.commit(Cursor(300, 0), {}, anomalies)
    await store.set_feedback("an-2", Feedback("real", "", october + 600))
    await store.set_feedback("an-3", Feedback("expected", "", november))
    await store.set_feedback("an-4", Feedback("real", "", november))
    return redis


@pytest.fixture
async def api(seeded: Redis) -> AsyncIterator[str]:
    async with reports_api(seeded, config(), BUDGETS) as url:
        yield url


async def test_october_scorecard_over_the_admin_api(api: str) -> None:
    status, text = await get(api, "/admin/reports/scorecard", period="2026-10")
    assert status == 200, text
    doc = orjson.loads(text)
    assert (doc["start"], doc["end"]) == ("2026-10-01", "2026-10-31")
    assert doc["compared_with"] == {"start": "2026-09-01", "end": "2026-09-30"}
    alpha = team_of(doc, "alpha")
    assert alpha["cost_usd"] == "7.000000000"
    assert (alpha["requests"], alpha["tokens"]) == (3, 360)
    daily, search = alpha["budgets"]
    # alpha-daily: 6 USD on the 3rd against 3.50 a day; 1 on the 20th.
    assert daily["budget"] == "alpha-daily"
    assert (daily["month_spent"], daily["limit"]) == ("7.000000000", "3.500000000")
    assert (daily["periods"], daily["periods_at_limit"], daily["peak_pct"]) == (31, 1, 171.4)
    assert (daily["blocked"], daily["downgraded"]) == (2, 0)
    # alpha-search: project search spent 6 of 10 in the month.
    assert (search["month_spent"], search["limit"]) == ("6.000000000", "10.000000000")
    assert (search["periods"], search["periods_at_limit"], search["peak_pct"]) == (1, 0, 60.0)
    assert (search["blocked"], search["downgraded"]) == (0, 1)
    assert (alpha["blocked"], alpha["downgraded"]) == (2, 1)
    # 6 of 7 USD named a project.
    assert (alpha["allocated_usd"], alpha["allocated_pct"]) == ("6.000000000", 85.7)
    # Tagging compliance: the 1 USD without a project lacked what alpha's tag policy requires.
    assert alpha["tagging"] == {
        "team": "alpha",
        "spend_usd": "7.000000000",
        "tagged_usd": "6.000000000",
        "untagged_usd": "1.000000000",
        "compliance": round(6 / 7, 6),
        "missing_usd": {"project": "1.000000000"},
    }
    assert alpha["savings_realized_usd"] == "2.000000000"
    # The recommendations of October: the nightly 1 USD at the batch API's half price.
    assert alpha["opportunities"] == [
        {"title": "batch api (nightly)", "monthly_savings_usd": "0.500000000"}
    ]
    assert alpha["savings_available_usd"] == "0.500000000"
    assert alpha["optimization_score_pct"] == 80.0  # 2 / (2 + 0.5)
    assert alpha["cost_per_request_usd"] == "2.333333333"  # 7 / 3
    assert alpha["cost_per_1k_tokens_usd"] == "19.444444444"  # 7 * 1000 / 360
    assert (alpha["units"], alpha["cost_per_unit_usd"]) == (1000, "0.007000000")
    assert (alpha["previous_usd"], alpha["change_usd"], alpha["change_pct"]) == (
        "2.000000000",
        "5.000000000",
        250.0,
    )
    assert alpha["drivers"] == [
        {"dimension": "model", "value": "gpt-4o", "change_usd": "4.000000000"},
        {"dimension": "project", "value": "search", "change_usd": "4.000000000"},
        {"dimension": "model", "value": "gpt-4o-mini", "change_usd": "1.000000000"},
    ]
    assert alpha["forecast"]["month"] == "2026-10"
    assert alpha["forecast"]["actual_usd"] == "7.000000000"
    # Fitted on the 21 days from its first spend (September 10th): the error is the forecast's
    # distance from the 7 USD spent, as a share of them.
    forecast = float(alpha["forecast"]["forecast_usd"])
    assert alpha["forecast"]["error_pct"] == round(100 * (forecast - 7) / 7, 1)
    assert alpha["anomalies"] == {"opened": 2, "confirmed": 1, "expected": 1}
    # Beta: a noise-free weekly pattern since June forecasts October to within 1 %.
    beta = team_of(doc, "beta")
    assert beta["forecast"]["actual_usd"] == f"{BETA_OCTOBER / USD:.9f}"
    assert abs(beta["forecast"]["error_pct"]) < 1.0
    assert beta["budgets"] == [] and beta["units"] is None
    assert beta["tagging"]["compliance"] == 1.0  # no tag policy governs its spend
    assert {t["team"] for t in doc["teams"]} == {"alpha", "beta"}  # platform is shared


async def test_the_table_names_every_line(api: str) -> None:
    status, text = await get(api, "/admin/reports/scorecard", period="2026-10", format="table")
    assert status == 200
    lines = {tuple(line.split()[:2]) for line in text.splitlines()[2:]}
    for line in ("cost", "budget", "allocated", "optimization", "cost", "month", "forecast"):
        assert ("alpha", line) in lines, line
    assert "2.000000000 saved; 0.500000000 a month still available" in text
    assert "drivers: model gpt-4o +4.000000000" in text
    assert "2 blocked; 0 downgraded" in text
    assert re.search(r"alpha +tagging compliance +85\.7 % +6\.000000000 of 7\.000000000", text)
    assert "spend lacking: project 1.000000000" in text


@pytest.mark.parametrize(
    ("period", "code"), [("2026-13", "invalid_request_error"), ("oct", "invalid_request_error")]
)
async def test_a_bad_period_is_a_400(api: str, period: str, code: str) -> None:
    status, text = await get(api, "/admin/reports/scorecard", period=period)
    assert status == 400
    assert orjson.loads(text)["error"]["param"] == "period"


async def test_the_cli_reads_the_store_itself_or_the_api(
    api: str, redis_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "store:\n"
        f"  url: {redis_url}\n"
        "providers:\n"
        "  mock: {kind: openai, base_url: 'http://127.0.0.1:9/v1', auth: none}\n"
        "models:\n"
        "  gpt-4o:\n"
        "    deployments: [{provider: mock, model: gpt-4o}]\n"
        "teams:\n"
        "  alpha:\n"
        "    units: {name: orders, monthly: 1000}\n"
        "    budgets:\n"
        "      - {name: alpha-daily, period: daily, limit_usd: 3.5}\n"
        "      - {name: alpha-search, scope: project, match: search, period: monthly,"
        " limit_usd: 10}\n"
        "  beta: {}\n"
        "policies:\n"
        "  tags: [{name: alpha-projects, when: {team: alpha}, require: project}]\n"
    )
    args = replace_args(
        parse("scorecard", "--period", "2026-10", "--format", "json"), config=str(path)
    )
    assert await report_cli.run_async(args, clock=FakeClock(T0)) == 0
    direct = orjson.loads(capsys.readouterr().out)
    alpha = team_of(direct, "alpha")
    assert alpha["cost_usd"] == "7.000000000"
    assert alpha["cost_per_unit_usd"] == "0.007000000"
    assert [b["blocked"] for b in alpha["budgets"]] == [2, 0]
    # Through a gateway's admin API (its clock at T0 too): the same document.
    via_api = replace_args(args, url=api, admin_key=ADMIN_KEY, config=None)
    assert await report_cli.run_async(via_api) == 0
    assert orjson.loads(capsys.readouterr().out) == direct
    for argv, message in (
        (("scorecard", "--team", "alpha"), "a scorecard covers every team for one month"),
        (("scorecard", "--period", "2026-1"), "expected a month as YYYY-MM"),
    ):
        code = await report_cli.run_async(replace_args(parse(*argv), config=str(path)))
        assert code == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("month", "today", "expected"),
    [
        # The month over: all of it against all of the month before.
        ("2026-10", date(2026, 11, 5), ("2026-10-01", "2026-10-31", "2026-09-01", "2026-09-30")),
        # Its first day: that day against the previous month's first.
        ("2026-12", date(2026, 12, 1), ("2026-12-01", "2026-12-01", "2026-11-01", "2026-11-01")),
        # Its last day: all of it.
        ("2026-11", date(2026, 11, 30), ("2026-11-01", "2026-11-30", "2026-10-01", "2026-10-31")),
        # March 30th against a February of 28 days: February stops at its end.
        ("2027-03", date(2027, 3, 30), ("2027-03-01", "2027-03-30", "2027-02-01", "2027-02-28")),
        # A leap day; and a January compared with December across the year's end.
        ("2028-02", date(2028, 2, 29), ("2028-02-01", "2028-02-29", "2028-01-01", "2028-01-31")),
        ("2027-01", date(2027, 1, 1), ("2027-01-01", "2027-01-01", "2026-12-01", "2026-12-01")),
    ],
)
def test_the_days_compared(month: str, today: date, expected: tuple[str, ...]) -> None:
    assert tuple(d.isoformat() for d in comparison(month, today)) == expected


@pytest.mark.parametrize(
    ("month", "today", "judged"),
    [
        ("2026-10", date(2026, 11, 1), "2026-10"),
        ("2026-11", date(2026, 11, 30), "2026-10"),
        ("2027-01", date(2027, 1, 1), "2026-12"),
        ("2026-12", date(2027, 1, 1), "2026-12"),
    ],
)
def test_the_forecast_judged_is_of_a_whole_month(month: str, today: date, judged: str) -> None:
    assert forecast_month(month, today) == judged
