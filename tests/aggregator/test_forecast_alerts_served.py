"""`budget_forecast` alerts from the aggregator that `serve` runs for the embedded store: spend
settled through the gateway's own ledger reaches the webhook as one alert for the budget
forecast over its limit, and none for the one that lasts."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.app.state import BUDGETS, LEDGER
from tests.clock import T0, RunningClock
from tests.conftest import GatewayFactory, Receiver
from tests.ledger import history


async def test_the_embedded_aggregator_alerts_a_budget_forecast_over_its_limit(
    gateway_factory: GatewayFactory, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_WEBHOOK_URL", receiver.url("finops"))
    gw = await gateway_factory("forecasts.yaml", teams=(), clock=RunningClock(T0))
    ledger, registry = gw.app[LEDGER], gw.app[BUDGETS]
    # Alpha spends ~$89 a day (November: ~$2,700 against $2,000); beta a third of that.
    for team, usd in (("alpha", 100.0), ("beta", 30.0)):
        for e in history(team, date(2026, 9, 1), T0.date(), usd, seed=7):
            await ledger.settle(None, team, e.request_id, registry.all(team), e)
    (alert,) = await receiver.wait_for("finops", 1, timeout_s=20)
    assert "Budget 'alpha-monthly' (team alpha) is forecast to reach" in alert["text"]
    assert gw.metric("sg_alerts_total", kind="budget_forecast", outcome="sent") == 1
    assert gw.metric("sg_budgets_forecast_over_limit", team="alpha") == 1
    assert gw.metric("sg_budgets_forecast_over_limit", team="beta") == 0
