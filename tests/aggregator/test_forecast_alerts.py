"""`budget_forecast` alerts on the aggregator side, on a fixed clock and a real Redis: two months
of settled spend (budget counters and the spend stream, as the gateway writes them) rolled up by
the aggregator, then the forecast checked against every budget. A webhook receiver on a real
socket sees each alert once per budget and period, whichever replica checks, however often."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.aggregator.forecasts import ForecastAlerts
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.budgets.alerts import BUDGET_FORECAST, AlertSender
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.config.model import (
    AlertsConfig,
    BudgetConfig,
    BudgetsConfig,
    Config,
    ForecastsConfig,
    ServerConfig,
    StoreConfig,
    TeamConfig,
    Webhook,
)
from gateway.types import SpendEvent
from tests.clock import T0, FakeClock
from tests.conftest import Receiver
from tests.ledger import drain, history

USD = 1_000_000_000
# Alpha spends about $100 a weekday ($86 a day over a week): November's forecast is ~$2,600.
BUDGETS = (
    BudgetConfig("alpha-monthly", "alpha", "team", None, "monthly", 2_400 * USD, None),
    BudgetConfig("alpha-roomy", "alpha", "team", None, "monthly", 10_000 * USD, None),
    BudgetConfig("alpha-weekly-spent", "alpha", "team", None, "weekly", 200 * USD, None),
    BudgetConfig("alpha-total", "alpha", "team", None, "total", 2_000 * USD, None),
    BudgetConfig("gamma-monthly", "gamma", "team", None, "monthly", 1_000 * USD, None),
)


def make_config(receiver: Receiver) -> Config:
    return Config(
        source="<test>",
        server=ServerConfig(),
        store=StoreConfig(),
        providers={},
        models={},
        teams={t: TeamConfig(t) for t in ("alpha", "gamma")},
        budgets=BudgetsConfig(rules=BUDGETS),
        # No cooldown: what keeps the alert to one per period is its own claim.
        alerts=AlertsConfig(
            webhooks=(Webhook("finops", receiver.url("finops"), events=(BUDGET_FORECAST,)),),
            cooldown_s=0,
        ),
        forecasts=ForecastsConfig(history_days=120, interval_s=60, alert_min_history_days=14),
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def settle(ledger: BudgetLedger, events: Sequence[SpendEvent]) -> None:
    """Charge each event to its team's budgets and append it to the team's stream."""
    for e in events:
        rules = [b for b in BUDGETS if b.team == e.team]
        await ledger.settle(None, e.team, e.request_id, rules, e)


def replica(
    redis: Redis, config: Config, session: aiohttp.ClientSession, clock: FakeClock
) -> ForecastAlerts:
    """One aggregator replica's forecast alerts, with its own registry, ledger and sender."""
    return ForecastAlerts(
        redis,
        config,
        AlertSender(session, redis, config.alerts),
        BudgetRegistry(redis, config.budgets.rules),
        BudgetLedger(redis, clock=clock),
        metrics=AggregatorMetrics(),
        clock=clock,
    )


@pytest.fixture
async def spent(redis: Redis) -> FakeClock:
    """Alpha's spend since September, gamma's for the nine days before T0, up to T0 (its
    morning included): settled and rolled up by the aggregator on a clock at T0."""
    clock = FakeClock(T0)
    ledger = BudgetLedger(redis, clock=clock)
    await settle(ledger, history("alpha", date(2026, 9, 1), T0.date(), 100.0, seed=1))
    await settle(ledger, history("gamma", date(2026, 10, 27), T0.date(), 100.0, seed=2))
    await drain(redis, clock=clock)
    return clock


async def test_a_budget_forecast_over_its_limit_alerts_once_per_period(
    redis: Redis, spent: FakeClock, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    config = make_config(receiver)
    one = replica(redis, config, session, spent)
    sent = await one.check()
    (body,) = receiver.posts["finops"]
    assert [o.spend.budget.name for o, _ in sent] == ["alpha-monthly"]
    assert body["text"].startswith(
        "[spendgate] Budget 'alpha-monthly' (team alpha) is forecast to reach $"
    )
    assert "by the end of its monthly period m202611" in body["text"]
    assert "over its limit of $2400.00" in body["text"]
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert float(fields["forecast_usd"]) > 2400 > float(fields["spent_usd"])
    assert fields["resets_at"] == "2026-12-01T00:00:00Z"
    assert fields["runs_out_at"] < "2026-12-01T00:00:00Z"  # within the period
    assert float(fields["mape_pct"]) < 12 and int(fields["history_days"]) == 65
    assert body["attachments"][0]["footer"] == "spendgate budget_forecast"
    assert one.metrics.forecast_over.labels("alpha")._value.get() == 1

    # Checked again, by this replica or another, and an hour later: nothing new.
    spent.advance(3600)
    two = replica(redis, config, session, spent)
    assert await one.check() == [] and await two.check() == []
    assert len(receiver.posts["finops"]) == 1

    # December is a new period: alerted again, once.
    spent.set(datetime(2026, 12, 5, 10, 30, tzinfo=UTC))
    ledger = BudgetLedger(redis, clock=spent)
    await settle(ledger, history("alpha", date(2026, 11, 6), date(2026, 12, 5), 100.0, seed=3))
    await drain(redis, clock=spent)
    await two.check()
    await one.check()
    december = receiver.posts["finops"][1:]
    assert len(december) == 1
    assert "period m202612" in december[0]["text"]


async def test_budgets_that_cannot_be_forecast_over_their_limit_do_not_alert(
    redis: Redis, spent: FakeClock, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    config = make_config(receiver)
    roomy_only = replace(
        config,
        budgets=BudgetsConfig(rules=tuple(b for b in BUDGETS if b.name != "alpha-monthly")),
    )
    alerts = replica(redis, roomy_only, session, spent)
    # alpha-roomy lasts; alpha-weekly-spent is over already (threshold alerts tell that);
    # alpha-total has no period end; gamma-monthly would run over, on nine days of history.
    assert await alerts.check() == []
    assert receiver.posts == {}
    # Once nine days are history enough, gamma's forecast alerts.
    alerts.set_config(
        replace(roomy_only, forecasts=replace(config.forecasts, alert_min_history_days=7))
    )
    (sent,) = await alerts.check()
    assert sent[0].spend.budget.name == "gamma-monthly"
    assert sent[0].spend.budget.name in receiver.posts["finops"][0]["text"]


async def test_replicas_take_turns_so_one_fits_per_interval(
    redis: Redis, spent: FakeClock, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    config = make_config(receiver)
    replicas = [replica(redis, config, session, spent) for _ in range(3)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
    try:
        await receiver.wait_for("finops", 1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    runs = [r.metrics.forecast_seconds._sum.get() > 0 for r in replicas]
    assert runs.count(True) == 1
    assert len(receiver.posts["finops"]) == 1
