"""How good the spend forecasts are, and what they cost: seeded daily series of known trend,
weekly season and noise; each model fitted on the first weeks and checked on the weeks held back
(MAPE, 80 % and 95 % interval coverage, the rest-of-month total), against its own backtest;
and the time to fit a series (the 12 candidate models and the backtest), as the report and the
aggregator's budget_forecast alerts pay it the first time they see a series each day.

    .venv/bin/python loadtests/forecast_accuracy.py [--seeds 40] [--train 84] [--held 28]

docs/benchmarks.md ("Forecasts") quotes its output.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analytics.forecast import SEASON, backtest, fit
from gateway.analytics.outlook import Forecaster

WEEK = (1.1, 1.15, 1.1, 1.05, 1.0, 0.45, 0.4)  # office weekdays, quiet weekends
Series = Callable[[random.Random, int], list[float]]


def office(noise: float, growth: float) -> Series:
    """Weekday-heavy spend growing by `growth` a day, multiplicative noise."""

    def make(rng: random.Random, n: int) -> list[float]:
        return [
            100 * (1 + growth) ** t * WEEK[t % SEASON] * max(0.0, 1 + rng.gauss(0, noise))
            for t in range(n)
        ]

    return make


def linear(rng: random.Random, n: int) -> list[float]:
    """A straight trend, an additive weekly wave, additive noise."""
    return [
        max(0.0, 100 + 0.5 * t + 20 * math.sin(2 * math.pi * t / SEASON) + rng.gauss(0, 5))
        for t in range(n)
    ]


def bursty(rng: random.Random, n: int) -> list[float]:
    """A small team: quiet days, a few busy ones, closed at weekends."""
    return [0.0 if t % SEASON >= 5 else 20 * rng.lognormvariate(0, 0.6) for t in range(n)]


SCENARIOS: dict[str, Series] = {
    "steady, 6 % noise": office(0.06, 0.0),
    "growing 9 %/month, 6 % noise": office(0.06, 0.003),
    "growing 35 %/month, 3 % noise": office(0.03, 0.01),
    "growing 9 %/month, 12 % noise": office(0.12, 0.003),
    "linear trend, additive season": linear,
    "bursty small team (lognormal, closed weekends)": bursty,
}


def measure(make: Series, seeds: int, train: int, held: int) -> dict[str, float]:
    errors, hits80, hits95, points = [], 0, 0, 0
    month_hits80 = month_errors = 0.0
    backtests = []
    for seed in range(seeds):
        y = make(random.Random(seed), train + held)
        model = fit(y[:train])
        assert model is not None
        for interval, actual in zip(model.forecast(held), y[train:], strict=True):
            points += 1
            hits80 += interval.covers(actual, 80)
            hits95 += interval.covers(actual, 95)
            if actual > 0:
                errors.append(abs(actual - interval.median) / actual)
        total = model.total([1.0] * held)
        actual_total = sum(y[train:])
        month_hits80 += total.covers(actual_total, 80)
        month_errors += abs(actual_total - total.median) / actual_total
        accuracy = backtest(y[:train])
        if accuracy is not None and accuracy.mape_pct is not None:
            backtests.append(accuracy.mape_pct)
    return {
        "mape": 100 * statistics.fmean(errors),
        "cover80": 100 * hits80 / points,
        "cover95": 100 * hits95 / points,
        "total_ape": 100 * month_errors / seeds,
        "total_cover80": 100 * month_hits80 / seeds,
        "backtest_mape": statistics.fmean(backtests) if backtests else float("nan"),
    }


def fit_seconds(days: int, repeats: int = 20) -> float:
    """Median time to fit and backtest one series of `days` (a fresh Forecaster each time)."""
    times = []
    for seed in range(repeats):
        y = [int(v * 1e9) for v in office(0.06, 0.003)(random.Random(seed), days)]
        started = time.perf_counter()
        Forecaster().fitted(y)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="series per scenario")
    parser.add_argument("--train", type=int, default=84, help="days fitted on")
    parser.add_argument("--held", type=int, default=28, help="days held back")
    args = parser.parse_args()
    print(
        f"{args.seeds} seeded series per scenario, fitted on {args.train} days, "
        f"{args.held} held back\n"
    )
    print(
        "| series | daily MAPE | 80 % interval covers | 95 % covers | backtest MAPE "
        f"| {args.held}-day total: error | total in its 80 % |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, make in SCENARIOS.items():
        m = measure(make, args.seeds, args.train, args.held)
        print(
            f"| {name} | {m['mape']:.1f} % | {m['cover80']:.1f} % | {m['cover95']:.1f} % "
            f"| {m['backtest_mape']:.1f} % | {m['total_ape']:.1f} % | {m['total_cover80']:.0f} % |"
        )
    print()
    for days in (30, 120, 400):
        print(f"fit + backtest of a {days}-day series: {1000 * fit_seconds(days):.0f} ms")


if __name__ == "__main__":
    main()
