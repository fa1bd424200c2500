"""The weekly review on a seeded ledger in a real Redis, figures computed by hand: ISO week
2026-W44 (Monday October 26th to Sunday November 1st, across a month's end), seen on a clock at
T0. Through the admin API on a real socket and the CLI; then the scheduled digest: posted to a
webhook receiver once per team and week whichever replica looks, with the report's figures
(and showback's spend); the schedule at the awkward moments."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from gateway.aggregator.reviews import ReviewDigests, due_week
from gateway.analytics.anomaly import Feedback
from gateway.analytics.review import week_start
from gateway.anomalies.records import AnomalyStore, Cursor
from gateway.budgets.alerts import AlertSender
from gateway.budgets.registry import BudgetRegistry
from gateway.config.model import (
    AlertsConfig,
    BudgetConfig,
    BudgetsConfig,
    Config,
    ReviewSchedule,
    Webhook,
)
from gateway.reports import cli as report_cli
from gateway.reviewing import reviewed_weeks
from tests.anomalies.support import sample_anomaly
from tests.clock import T0, FakeClock
from tests.conftest import Receiver
from tests.ledger import drain, event, produce
from tests.reports.reports_api import get, reports_api, team_of
from tests.reports.test_admin_reports import ADMIN_KEY, make_config
from tests.reports.test_forecast_report import parse, replace_args

USD = 1_000_000_000
BUDGETS = (
    BudgetConfig("alpha-daily", "alpha", "team", None, "daily", 2_500_000_000, None),
    BudgetConfig("alpha-weekly", "alpha", "team", None, "weekly", 3_500_000_000, None),
    BudgetConfig("alpha-monthly", "alpha", "team", None, "monthly", 10 * USD, None),
)


def _ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def _s(*when: int) -> int:
    return _ms(*when) // 1000


def config(receiver: Receiver | None = None) -> Config:
    hooks = () if receiver is None else (Webhook("finops", receiver.url("finops")),)
    alerts = AlertsConfig(webhooks=hooks, cooldown_s=0, review=ReviewSchedule(0, 9))
    return replace(make_config(), budgets=BudgetsConfig(rules=BUDGETS), alerts=alerts)


@pytest.fixture
async def seeded(redis: Redis) -> Redis:
    events = [
        event(1, ts_ms=_ms(2026, 10, 20, 12), cost_nano=2 * USD),  # W43
        event(2, ts_ms=_ms(2026, 10, 26), cost_nano=3 * USD),  # W44's first second
        # W44's last second, a nightly job's: the batch API would save half of it.
        event(3, ts_ms=_ms(2026, 11, 1, 23, 59, 59), cost_nano=USD, workload="nightly"),
        event(4, ts_ms=_ms(2026, 11, 2), cost_nano=10 * USD),  # W45
        event(5, team="beta", ts_ms=_ms(2026, 10, 28, 8), cost_nano=USD // 2),
    ]
    await produce(redis, events)
    await drain(redis)
    store = AnomalyStore(redis)
    anomalies = [
        replace(sample_anomaly(), id=f"an-{n}", start_s=start_s, end_s=start_s + 300)
        for n, start_s in (
            (1, _s(2026, 10, 25, 23, 55)),
            (2, _s(2026, 10, 26)),
            (3, _s(2026, 11, 2)),
        )
    ]
    await store.commit(Cursor(300, 0), {}, anomalies)
    await store.set_feedback("an-2", Feedback("real", "", _s(2026, 10, 27)))
    return redis


@pytest.fixture
async def api(seeded: Redis) -> AsyncIterator[str]:
    async with reports_api(seeded, config(), BUDGETS) as url:
        yield url


# W44 by hand: alpha spent 3 + 1 (2 the week before: +100 %); its daily budget (2.50) was at
# its limit on Monday and used 40 % on Sunday; its weekly one (3.50) 4 of 3.50; its monthly
# one (10) 1 in November by Sunday. One anomaly started in the week (marked real).
ALPHA_W44 = {
    "team": "alpha",
    "cost_usd": "4.000000000",
    "requests": 2,
    "previous_usd": "2.000000000",
    "change_usd": "2.000000000",
    "change_pct": 100.0,
    "budgets": [
        {
            "budget": "alpha-daily",
            "period": "daily",
            "unit": "usd",
            "limit": "2.500000000",
            "period_id": "2026-11-01",
            "spent": "1.000000000",
            "burn_pct": 40.0,
            "periods_at_limit": 1,
            "peak_pct": 120.0,
        },
        {
            "budget": "alpha-weekly",
            "period": "weekly",
            "unit": "usd",
            "limit": "3.500000000",
            "period_id": "2026-W44",
            "spent": "4.000000000",
            "burn_pct": 114.3,
            "periods_at_limit": 1,
            "peak_pct": 114.3,
        },
        {
            "budget": "alpha-monthly",
            "period": "monthly",
            "unit": "usd",
            "limit": "10.000000000",
            "period_id": "2026-11",
            "spent": "1.000000000",
            "burn_pct": 10.0,
            "periods_at_limit": 0,
            "peak_pct": 10.0,
        },
    ],
    "anomalies": {"opened": 1, "confirmed": 1, "expected": 0},
    # The recommendations of the 30 days to Sunday: the nightly 1 USD at half price.
    "recommendations": [{"title": "batch api (nightly)", "monthly_savings_usd": "0.500000000"}],
}


async def test_the_last_complete_week_over_the_admin_api(api: str) -> None:
    status, text = await get(api, "/admin/reports/review")
    assert status == 200, text
    doc = orjson.loads(text)
    assert (doc["week"], doc["start"], doc["end"]) == ("2026-W44", "2026-10-26", "2026-11-01")
    assert team_of(doc, "alpha") == ALPHA_W44
    beta = team_of(doc, "beta")
    assert (beta["cost_usd"], beta["change_pct"], beta["budgets"]) == ("0.500000000", None, [])
    # The same week asked for by name; the one after has alpha's 10 USD against these 4.
    assert orjson.loads((await get(api, "/admin/reports/review", week="2026-W44"))[1]) == doc
    after = orjson.loads((await get(api, "/admin/reports/review", week="2026-W45"))[1])
    assert (team_of(after, "alpha")["cost_usd"], team_of(after, "alpha")["change_pct"]) == (
        "10.000000000",
        150.0,
    )


async def test_review_figures_equal_showback_and_the_table(api: str) -> None:
    _, text = await get(api, "/admin/reports/showback", start="2026-10-26", end="2026-11-01")
    showback = orjson.loads(text)
    teams = {t["team"]: t["cost_usd"] for t in showback["teams"]}
    _, text = await get(api, "/admin/reports/review", week="2026-W44")
    review = orjson.loads(text)
    assert {t["team"]: t["cost_usd"] for t in review["teams"]} == {
        k: v for k, v in teams.items() if k != "platform"
    }
    status, table = await get(api, "/admin/reports/review", week="2026-W44", format="table")
    assert status == 200
    assert table.splitlines()[0] == "review 2026-W44 (2026-10-26..2026-11-01, USD)"
    assert "alpha  budget alpha-weekly" in table and "114.3 %" in table
    line = r"alpha +recommendation +0.500000000 +batch api \(nightly\) \(a month\)"
    assert re.search(line, table)


@pytest.mark.parametrize("week", ["2026-W54", "2026-45", "W45", "2026-W4"])
async def test_a_bad_week_is_a_400(api: str, week: str) -> None:
    status, text = await get(api, "/admin/reports/review", week=week)
    assert status == 400, text
    assert orjson.loads(text)["error"]["param"] == "week"


async def test_the_cli_reads_the_store_itself_or_the_api(
    api: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"store:\n  url: {redis_url}\n"
        "providers:\n  mock: {kind: openai, base_url: 'http://127.0.0.1:9/v1', auth: none}\n"
        "models:\n  gpt-4o:\n    deployments: [{provider: mock, model: gpt-4o}]\n"
        "teams:\n  alpha:\n    budgets:\n"
        "      - {name: alpha-daily, period: daily, limit_usd: 2.5}\n"
        "      - {name: alpha-weekly, period: weekly, limit_usd: 3.5}\n"
        "      - {name: alpha-monthly, period: monthly, limit_usd: 10}\n"
        "  beta: {}\n"
    )
    args = replace_args(parse("review", "--week", "--format", "json"), config=str(path))
    assert await report_cli.run_async(args, clock=FakeClock(T0)) == 0
    direct = orjson.loads(capsys.readouterr().out)
    assert team_of(direct, "alpha") == ALPHA_W44
    via_api = replace_args(args, url=api, admin_key=ADMIN_KEY, config=None)
    assert await report_cli.run_async(via_api) == 0
    assert orjson.loads(capsys.readouterr().out) == direct
    for argv, message in (
        (("review", "--period", "2026-11"), "a review covers every team for one week"),
        (("scorecard", "--week"), "--week selects a review's week"),
        (("review", "--week", "2026-W60"), "2026 has no week 60"),
    ):
        code = await report_cli.run_async(
            replace_args(parse(*argv), config=str(path)), FakeClock(T0)
        )
        assert code == 1 and message in capsys.readouterr().err


async def test_the_digest_is_posted_once_a_week_with_the_reports_figures(
    seeded: Redis, receiver: Receiver
) -> None:
    cfg = config(receiver)
    clock = FakeClock(datetime(2026, 11, 2, 8, 59, 59, tzinfo=UTC))

    def replica(session: aiohttp.ClientSession) -> ReviewDigests:
        sender = AlertSender(session, seeded, cfg.alerts)
        return ReviewDigests(
            seeded, cfg, sender, BudgetRegistry(seeded, cfg.budgets.rules), clock=clock
        )

    async with aiohttp.ClientSession() as session:
        one, two = replica(session), replica(session)
        # Monday 08:59:59: W43's digest was due (last Monday 09:00); nobody posted it.
        assert sorted(await one.check()) == ["alpha", "beta"]
        assert list(await reviewed_weeks(seeded)) == ["2026-W43"]
        clock.set(datetime(2026, 11, 2, 9, tzinfo=UTC))  # W44's is due now
        assert sorted(await two.check()) == ["alpha", "beta"]
        assert await one.check() == [] and await two.check() == []
        clock.advance(6 * 86_400)  # still W44's until next Monday 09:00
        assert await one.check() == []
    posts = await receiver.wait_for("finops", 4)
    w44 = [p for p in posts if "2026-W44" in p["text"]]
    assert len(w44) == 2 and len(receiver.posts["finops"]) == 4
    alpha = next(p for p in w44 if "review of alpha" in p["text"])
    assert alpha["text"] == (
        "[spendgate] Weekly review of alpha, 2026-W44 (2026-10-26..2026-11-01): spent "
        "4.000000000 USD (+100.0 % on the week before), 2 requests.\n"
        "Budget alpha-daily: 40.0 % of its daily limit used in 2026-11-01; at its limit in 1.\n"
        "Budget alpha-weekly: 114.3 % of its weekly limit used in 2026-W44; at its limit in 1.\n"
        "Budget alpha-monthly: 10.0 % of its monthly limit used in 2026-11.\n"
        "Anomalies: 1 opened (1 confirmed, 0 expected).\n"
        "Recommendation: batch api (nightly) (saves ~0.500000000 USD a month)."
    )
    fields = {f["title"]: f["value"] for f in alpha["attachments"][0]["fields"]}
    assert fields == {
        "team": "alpha",
        "week": "2026-W44",
        "spend_usd": ALPHA_W44["cost_usd"],
        "previous_usd": ALPHA_W44["previous_usd"],
        "anomalies": "1",
    }


async def test_no_schedule_no_digest(seeded: Redis, receiver: Receiver) -> None:
    cfg = config(receiver)
    cfg = replace(cfg, alerts=replace(cfg.alerts, review=None))
    async with aiohttp.ClientSession() as session:
        digests = ReviewDigests(
            seeded,
            cfg,
            AlertSender(session, seeded, cfg.alerts),
            BudgetRegistry(seeded, ()),
            clock=FakeClock(T0),
        )
        assert await digests.check() == []
    assert await reviewed_weeks(seeded) == {}


@pytest.mark.parametrize(
    ("schedule", "now", "week"),
    [
        (ReviewSchedule(0, 9), datetime(2026, 11, 2, 8, 59, 59, tzinfo=UTC), "2026-W43"),
        (ReviewSchedule(0, 9), datetime(2026, 11, 2, 9, tzinfo=UTC), "2026-W44"),
        # Sunday 23:00: the week digested is the one before (this one is not over).
        (ReviewSchedule(6, 23), datetime(2026, 11, 8, 23, tzinfo=UTC), "2026-W44"),
        (ReviewSchedule(6, 23), datetime(2026, 11, 8, 22, 59, 59, tzinfo=UTC), "2026-W43"),
        # The year's end: 2026 has 53 ISO weeks.
        (ReviewSchedule(0, 0), datetime(2027, 1, 4, tzinfo=UTC), "2026-W53"),
        (ReviewSchedule(0, 0), datetime(2027, 1, 3, 23, 59, 59, tzinfo=UTC), "2026-W52"),
        # A leap day (Tuesday 2028-02-29).
        (ReviewSchedule(1, 12), datetime(2028, 2, 29, 12, tzinfo=UTC), "2028-W08"),
    ],
)
def test_the_week_due(schedule: ReviewSchedule, now: datetime, week: str) -> None:
    monday = due_week(schedule, now)
    assert monday == week_start(week) and monday.weekday() == 0
    assert monday < now.date()


def test_week_names() -> None:
    assert week_start("2026-W53") == date(2026, 12, 28)
    assert week_start("2027-W01") == date(2027, 1, 4)
    with pytest.raises(ValueError, match="2027 has no week 53"):
        week_start("2027-W53")
