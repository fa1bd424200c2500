"""What the scorecard, the weekly review and the maturity assessment cost to compute, past the
store reads, in CPU time of this process (the machine may be shared): seeded daily rollups of
N teams (several projects, models, keys and tags each, a budget of each period kind per team)
over the forecasts' 120 days of history, handed to the pure functions the reports call. The
scorecard's time is mostly its forecasts (one fit a team, done again only when the history
changes: the first run of a day pays it); the report layer reads the store before (one
pipelined HGETALL per team, day and dimension).

    .venv/bin/python loadtests/report_timing.py [--teams 50] [--days 150] [--rounds 3]

docs/benchmarks.md ("Scorecards") quotes its output.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.analytics.maturity import Signals, assess
from gateway.analytics.outlook import Forecaster
from gateway.analytics.review import review
from gateway.analytics.rollupdata import RollupData, day_bucket
from gateway.analytics.scorecard import ScorecardInputs, scorecard
from gateway.config.model import BudgetConfig, TeamConfig

USD = 1_000_000_000
WEEK = (1.1, 1.15, 1.1, 1.05, 1.0, 0.45, 0.4)


def rollups(teams: list[str], first: date, last: date, seed: int) -> RollupData:
    rng = random.Random(seed)
    hashes: dict[tuple[str, str, str], dict[str, int]] = {}
    day = first
    while day <= last:
        bucket = day_bucket(day)
        for team in teams:
            usd = 100 * WEEK[day.weekday()] * max(0.0, 1 + rng.gauss(0, 0.1))
            cost = int(usd * USD)
            metrics = {
                "cost": cost,
                "list_cost": cost * 5 // 4,
                "savings": cost // 4,
                "requests": 1000,
                "prompt": 400_000,
                "completion": 80_000,
            }
            hashes[(team, bucket, "team")] = {f"{team}|{m}": v for m, v in metrics.items()}
            for dimension, values in (
                ("project", ("search", "support", "-")),
                ("model", ("gpt-4o", "gpt-4o-mini", "claude")),
                ("key", ("key_000000000001", "key_000000000002")),
                ("tag", ("experiment=a", "experiment=b")),
            ):
                share = len(values)
                hashes[(team, bucket, dimension)] = {
                    f"{v}|{m}": amount // share for v in values for m, amount in metrics.items()
                }
        day += timedelta(days=1)
    return RollupData.from_hashes("d", first, last, hashes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    today = date(2026, 11, 5)
    teams = [f"team{i:03d}" for i in range(args.teams)]
    data = rollups(teams, today - timedelta(days=args.days), today, seed=1)
    budgets = [
        BudgetConfig(f"{t}-{p}", t, "team", None, p, 3_000 * USD, None)  # type: ignore[arg-type]
        for t in teams
        for p in ("daily", "weekly", "monthly")
    ]
    configs = {t: TeamConfig(t) for t in teams}
    inputs = ScorecardInputs(
        month="2026-10",
        today=today,
        data=data,
        history=data,
        teams=configs,
        budgets=budgets,
        refusals={},
        anomalies={},
        opportunities=(),
        history_days=120,
    )
    timings: dict[str, list[float]] = {
        "scorecard, first": [],
        "scorecard, fits known": [],
        "review": [],
        "maturity criteria": [],
    }
    for _ in range(args.rounds):
        forecaster = Forecaster()
        started = time.process_time()
        scorecard(inputs, forecaster)
        timings["scorecard, first"].append(time.process_time() - started)
        started = time.process_time()
        scorecard(inputs, forecaster)
        timings["scorecard, fits known"].append(time.process_time() - started)
        started = time.process_time()
        review(date(2026, 10, 26), data, configs, budgets, {}, ())
        timings["review"].append(time.process_time() - started)
        started = time.process_time()
        for _team in teams:
            assess(
                _team, Signals(100, 90, 95.0, True, 125, 25, 3, 3, (), True, 0, 0, 5.0, 4, True, ())
            )
        timings["maturity criteria"].append(time.process_time() - started)
    print(
        f"{args.teams} teams, {args.days} days of daily rollups, {args.rounds} rounds "
        "(median CPU time)"
    )
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:<22} {median * 1000:9.1f} ms  ({median * 1000 / args.teams:.2f} ms a team)")


if __name__ == "__main__":
    main()
