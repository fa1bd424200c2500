"""Outlooks on fixed clocks: the rest of today and of a period at the awkward moments, when a
budget runs out at a known rate, the month's expected total, which series a budget's scope
reads, and the forecaster's memory."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.analytics.outlook import (
    BudgetSpend,
    Clock,
    Forecaster,
    SeriesKey,
    budget_outlook,
    daily_series,
    spend_outlook,
    total_series,
)
from gateway.config.model import BudgetConfig
from tests.clock import AWKWARD_MOMENTS, T0
from tests.ledger import event, external_event, rollup_data

USD = 1_000_000_000
STEADY = [100 * USD] * 60  # $100 every day: the forecast is $100 a day, exactly


def budget(
    period: str = "monthly", usd: int | None = 3_000, tokens: int | None = None
) -> BudgetConfig:
    return BudgetConfig(
        "b",
        "alpha",
        "team",
        None,
        period,
        None if usd is None else usd * USD,
        tokens,  # type: ignore[arg-type]
    )


def spend_of(
    config: BudgetConfig, clock: Clock, spent_usd: float, spent_tokens: int = 0
) -> BudgetSpend:
    from gateway.budgets.periods import period_end, period_id

    return BudgetSpend(
        config,
        period_id(config.period, clock.now),
        period_end(config.period, clock.now),
        int(spent_usd * USD),
        spent_tokens,
    )


def test_the_rest_of_today_and_of_the_month_at_t0() -> None:
    clock = Clock(T0)  # 2026-11-05 10:30
    assert clock.left_today == pytest.approx(13.5 / 24)
    weights = clock.weights_until(datetime(2026, 12, 1, tzinfo=UTC))
    assert weights == [pytest.approx(13.5 / 24)] + [1.0] * 25  # Nov 6 to 30


@pytest.mark.parametrize("moment", AWKWARD_MOMENTS, ids=lambda m: m.isoformat())
def test_the_rest_of_the_month_at_awkward_moments(moment: datetime) -> None:
    from gateway.budgets.periods import period_end

    clock = Clock(moment)
    end = period_end("monthly", moment)
    assert end is not None
    weights = clock.weights_until(end)
    left = (end - moment).total_seconds() / 86_400
    assert sum(weights) == pytest.approx(left)
    assert len(weights) == (end.date() - moment.date()).days
    assert 0 < weights[0] <= 1.0


def test_a_steady_budget_runs_out_when_its_rate_says() -> None:
    clock = Clock(datetime(2026, 11, 5, 6, 0, tzinfo=UTC))  # 18 hours left today
    fitted = Forecaster().fitted(STEADY)
    # $250 left: $75 for the rest of today, $100 tomorrow, then $75 is 18:00 the day after.
    outlook = budget_outlook(spend_of(budget(usd=1_000), clock, 750), fitted, None, clock)
    (limit,) = outlook.limits
    assert limit.status == "runs_out"
    assert limit.exhausted_at == datetime(2026, 11, 7, 18, 0, tzinfo=UTC)
    assert outlook.exhausted_at == limit.exhausted_at
    # At the month's end: $750 + $75 + 25 days (the 6th to the 30th) x $100.
    assert limit.period_end is not None
    assert limit.period_end.median == pytest.approx((750 + 75 + 2_500) * USD)
    assert limit.will_exceed and outlook.will_exceed


def test_a_budget_that_lasts_its_period_is_not_forecast_over() -> None:
    clock = Clock(T0)
    fitted = Forecaster().fitted(STEADY)
    outlook = budget_outlook(spend_of(budget(usd=10_000), clock, 400), fitted, None, clock)
    (limit,) = outlook.limits
    assert (limit.status, limit.exhausted_at, limit.will_exceed) == ("lasts", None, False)
    assert limit.period_end is not None and limit.period_end.median < limit.limit


def test_an_exhausted_budget_says_so_and_a_total_budget_is_searched_a_year_ahead() -> None:
    clock = Clock(T0)
    fitted = Forecaster().fitted(STEADY)
    over = budget_outlook(spend_of(budget(usd=100), clock, 150), fitted, None, clock)
    assert over.limits[0].status == "exhausted" and not over.will_exceed
    total = budget_outlook(spend_of(budget("total", usd=5_000), clock, 0), fitted, None, clock)
    (limit,) = total.limits
    assert limit.period_end is None and not limit.will_exceed  # no end to forecast to
    assert limit.exhausted_at == clock.now + timedelta(days=50)
    never = budget_outlook(spend_of(budget("total", usd=10**6), clock, 0), fitted, None, clock)
    assert never.limits[0].status == "lasts"


def test_a_budget_with_usd_and_token_limits_runs_out_at_the_first() -> None:
    clock = Clock(datetime(2026, 11, 5, 0, 0, tzinfo=UTC))
    forecaster = Forecaster()
    usd, tokens = forecaster.fitted(STEADY), forecaster.fitted([1_000] * 60)
    spend = spend_of(budget("weekly", usd=10_000, tokens=2_500), clock, 0)
    outlook = budget_outlook(spend, usd, tokens, clock)
    assert [limit.unit for limit in outlook.limits] == ["usd", "tokens"]
    assert outlook.limits[0].status == "lasts"
    assert outlook.limits[1].exhausted_at == datetime(2026, 11, 7, 12, 0, tzinfo=UTC)
    assert outlook.exhausted_at == outlook.limits[1].exhausted_at


def test_without_history_there_is_no_forecast_and_no_alarm() -> None:
    clock = Clock(T0)
    fitted = Forecaster().fitted([0] * 50 + [5 * USD] * 3)  # three days since the first spend
    assert fitted.model is None and fitted.history_days == 3
    outlook = budget_outlook(spend_of(budget(usd=10), clock, 1), fitted, None, clock)
    assert outlook.limits[0].status == "lasts" and not outlook.will_exceed
    team = spend_outlook("alpha", fitted, clock, 7 * USD, USD, 30)
    assert (team.month_end, team.next_days, team.days) == (None, None, ())


def test_the_month_end_adds_the_forecast_rest_to_what_is_spent() -> None:
    clock = Clock(T0)
    outlook = spend_outlook("alpha", Forecaster().fitted(STEADY), clock, 420 * USD, 20 * USD, 14)
    assert outlook.month_end is not None
    assert outlook.month_end.median == pytest.approx((420 + 100 * (13.5 / 24 + 25)) * USD)
    assert [d.day for d in outlook.days][:2] == [date(2026, 11, 5), date(2026, 11, 6)]
    assert len(outlook.days) == 14
    assert outlook.next_days is not None
    assert outlook.next_days.median == pytest.approx(1_400 * USD)


def test_a_budget_scope_reads_its_own_series_without_external_costs() -> None:
    day = date.fromtimestamp(T0.timestamp())
    events = [
        event(1, cost_nano=300, prompt_tokens=10, completion_tokens=5),
        event(2, cost_nano=200, project="ranking", key_id="key_000000000002", tags={"exp": "a"}),
        external_event(3, 5_000),  # posted: not something a budget counts
    ]
    data = rollup_data(events, day, day)

    def series(dimension: str, value: str, unit: str = "usd") -> list[int]:
        return daily_series(data, SeriesKey("alpha", dimension, value, unit), day, day)  # type: ignore[arg-type]

    assert series("team", "alpha") == [500]
    assert series("team", "alpha", "tokens") == [10 + 5 + 100 + 20]
    assert series("project", "ranking") == [200]
    assert series("key", "key_000000000002") == [200]
    assert series("tag", "exp=a") == [200]
    assert series("project", "nothing") == [0]
    assert total_series([[1, 2], [10, 20]]) == [11, 22]
    scoped = BudgetConfig("p", "alpha", "project", "ranking", "daily", 1, None)
    assert spend_of(scoped, Clock(T0), 0).series_key("usd") == SeriesKey(
        "alpha", "project", "ranking", "usd"
    )


def test_the_forecaster_fits_a_series_once_and_from_its_first_spend() -> None:
    forecaster = Forecaster()
    first = forecaster.fitted([0, 0, 0, *STEADY])
    assert first.history_days == len(STEADY)
    assert forecaster.fitted(STEADY) is first  # the leading zeros were no history
    assert forecaster.fitted([*STEADY, 100 * USD]) is not first
