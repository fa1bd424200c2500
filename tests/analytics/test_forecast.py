"""The forecasting model on series of known trend, weekly season and noise (seeded): accuracy
on held-back weeks, interval coverage, the model's own backtest, and the sum of days against a
simulation of the model itself.

Tolerances: coverage is pooled over 20 seeded series x 28 held-back days (560 points); the
days of one series are correlated, so the spread is wider than a binomial's 1.7 points: an 80 %
interval must cover 72-90 % of them and a 95 % one 90-99.5 %. MAPE is bounded by what the
noise allows (6 % daily noise: the FinOps Foundation's "run" band, 12 %)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest

from gateway.analytics.forecast import MIN_DAYS, SEASON, Interval, Model, backtest, fit

WEEK = (1.1, 1.15, 1.1, 1.05, 1.0, 0.45, 0.4)  # office weekdays, quiet weekends
TRAIN, HELD = 84, 28  # twelve weeks to learn from, four held back
Series = Callable[[int, int], list[float]]


def growing(seed: int, n: int, noise: float = 0.06, growth: float = 0.003) -> list[float]:
    """Spend growing 0.3 % a day (9 % a month), weekends at 40-45 %, 6 % noise."""
    rng = random.Random(seed)
    return [
        100.0 * (1 + growth) ** t * WEEK[t % SEASON] * (1 + rng.gauss(0, noise)) for t in range(n)
    ]


def linear(seed: int, n: int) -> list[float]:
    """A straight trend with an additive weekly wave and additive noise."""
    rng = random.Random(seed)
    return [
        100 + 0.5 * t + 20 * math.sin(2 * math.pi * t / SEASON) + rng.gauss(0, 5) for t in range(n)
    ]


def flat(seed: int, n: int) -> list[float]:
    return growing(seed, n, growth=0.0)


def held_back(make: Series, seeds: int = 20) -> tuple[float, float, float]:
    """(MAPE %, 80 % coverage %, 95 % coverage %) over the held-back days of `seeds` series."""
    errors: list[float] = []
    hits80 = hits95 = 0
    for seed in range(seeds):
        y = make(seed, TRAIN + HELD)
        model = fit(y[:TRAIN])
        assert model is not None
        for interval, actual in zip(model.forecast(HELD), y[TRAIN:], strict=True):
            errors.append(abs(actual - interval.median) / actual)
            hits80 += interval.covers(actual, 80)
            hits95 += interval.covers(actual, 95)
    points = len(errors)
    return 100 * sum(errors) / points, 100 * hits80 / points, 100 * hits95 / points


@pytest.mark.parametrize("make", [growing, linear, flat], ids=["growing", "linear", "flat"])
def test_held_back_weeks_are_forecast_within_the_run_band_and_intervals_cover(
    make: Series,
) -> None:
    mape, cover80, cover95 = held_back(make)
    assert mape < 12.0
    assert 72.0 <= cover80 <= 90.0
    assert 90.0 <= cover95 <= 99.5


def test_a_growing_series_is_forecast_to_keep_growing() -> None:
    y = growing(7, TRAIN, noise=0.03, growth=0.01)  # 35 % a month: no mistaking it for noise
    model = fit(y)
    assert model is not None and model.trend != "N"
    weeks = [sum(i.median for i in model.forecast(4 * SEASON)[w * 7 : w * 7 + 7]) for w in range(4)]
    assert weeks == sorted(weeks)  # each week above the one before
    assert weeks[-1] > sum(y[-SEASON:]) * 1.03


def test_the_weekly_season_is_learnt() -> None:
    y = flat(3, TRAIN)  # day 0 is a Monday-like day: index 84 is one again
    model = fit(y)
    assert model is not None and model.seasonal
    days = model.forecast(SEASON)
    assert days[5].median < 0.6 * days[1].median and days[6].median < 0.6 * days[2].median


def test_a_noiseless_series_is_forecast_exactly() -> None:
    y = [100.0 * WEEK[t % SEASON] for t in range(TRAIN)]
    model = fit(y)
    assert model is not None
    for t, interval in enumerate(model.forecast(14), start=TRAIN):
        assert interval.median == pytest.approx(100.0 * WEEK[t % SEASON], rel=1e-3)
        assert interval.high95 - interval.low95 < 1.0


def test_short_histories_get_simpler_models_and_none_below_a_week() -> None:
    assert fit([5.0] * (MIN_DAYS - 1)) is None
    ten_days = fit(growing(1, 10))
    assert ten_days is not None and not ten_days.seasonal  # two weeks to start a season from
    three_weeks = fit(flat(1, 3 * SEASON))
    assert three_weeks is not None


def test_zero_spend_forecasts_zero_with_no_spread() -> None:
    model = fit([0.0] * 30)
    assert model is not None
    assert model.forecast(3) == [Interval(0.0, 0.0, 0.0, 0.0, 0.0)] * 3
    assert model.total([0.5, 1.0]).median == 0.0


def test_intervals_never_go_below_zero() -> None:
    rng = random.Random(5)
    y = [max(0.0, rng.gauss(2.0, 3.0)) for _ in range(60)]  # mostly tiny, often zero
    model = fit(y)
    assert model is not None
    for interval in model.forecast(30):
        assert 0.0 <= interval.low95 <= interval.low80 <= interval.high80 <= interval.high95
        assert interval.low95 <= interval.median <= interval.high95


def test_the_backtest_agrees_with_what_held_back_weeks_show() -> None:
    accuracies = [backtest(growing(seed, TRAIN)) for seed in range(10)]
    assert all(a is not None for a in accuracies)
    mape = sum(a.mape_pct or 0 for a in accuracies if a) / 10
    cover80 = sum(a.coverage80_pct for a in accuracies if a) / 10
    assert mape < 12.0
    assert 65.0 <= cover80 <= 95.0
    first = accuracies[0]
    assert first is not None
    assert (first.points, first.horizon_days, first.window_days) == (28 * 7, 7, 28)


def test_the_backtest_shrinks_its_window_then_gives_up_on_short_histories() -> None:
    shorter = backtest(growing(1, 40))  # 40 - 7 - 21 + 1 = 13 days to test on
    assert shorter is not None and shorter.window_days == 13
    assert shorter.points == 13 * 7
    assert backtest(growing(1, 33)) is None  # 6 days: less than a week


def test_days_without_spend_do_not_count_in_the_mape() -> None:
    y = [0.0 if t % SEASON >= 5 else 100.0 + t for t in range(TRAIN)]  # closed at weekends
    accuracy = backtest(y)
    assert accuracy is not None and accuracy.mape_pct is not None
    assert math.isfinite(accuracy.mape_pct)


@pytest.mark.parametrize("make", [growing, linear], ids=["log scale", "spend scale"])
def test_the_interval_of_a_sum_of_days_matches_a_simulation_of_the_model(make: Series) -> None:
    model = fit(make(11, TRAIN))
    assert model is not None
    assert (model.offset is not None) == (make is growing)  # each scale is exercised
    weights = [0.3] + [1.0] * 19  # the rest of today, then 19 whole days
    interval = model.total(weights)
    sums = sorted(_simulate(model, weights, random.Random(0), 20_000))
    n = len(sums)
    spread = interval.high95 - interval.low95
    assert interval.median == pytest.approx(sums[n // 2], abs=0.02 * spread)
    assert interval.low80 == pytest.approx(sums[n // 10], abs=0.02 * spread)
    assert interval.high80 == pytest.approx(sums[9 * n // 10], abs=0.02 * spread)
    assert interval.low95 == pytest.approx(sums[n // 40], abs=0.03 * spread)
    assert interval.high95 == pytest.approx(sums[39 * n // 40], abs=0.03 * spread)


def test_each_day_s_interval_matches_a_simulation_of_the_model() -> None:
    model = fit(growing(12, TRAIN))
    assert model is not None
    days = model.forecast(14)
    for h in (0, 6, 13):
        one_day = [0.0] * h + [1.0]
        draws = sorted(_simulate(model, one_day, random.Random(h), 20_000))
        n = len(draws)
        spread = days[h].high95 - days[h].low95
        assert days[h].median == pytest.approx(draws[n // 2], abs=0.02 * spread)
        assert days[h].low80 == pytest.approx(draws[n // 10], abs=0.03 * spread)
        assert days[h].high80 == pytest.approx(draws[9 * n // 10], abs=0.03 * spread)


def _simulate(
    model: Model, weights: Sequence[float], rng: random.Random, paths: int
) -> list[float]:
    """Weighted sums of days drawn from the model's own equations, shocks included."""
    sd = math.sqrt(model.sigma2)
    out = []
    for _ in range(paths):
        level, slope, season = model.level, model.slope, list(model.season)
        total = 0.0
        for w in weights:
            shock = rng.gauss(0.0, sd)
            z = level + model.phi * slope + season[0] + shock
            value = z if model.offset is None else math.exp(z) - model.offset
            total += w * value
            level += model.phi * slope + model.alpha * shock
            slope = model.phi * slope + model.beta * shock
            season = [*season[1:], season[0] + model.gamma * shock]
        out.append(total)
    return out
