"""Forecasts from the ledger: reads the daily rollups and the budgets' counters, and hands them to
the pure forecasting (`analytics.outlook`, `analytics.forecast`). What the forecast report (CLI
and admin API) and the aggregator's `budget_forecast` alerts both use, so that an alert and the
report it points to say the same thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from gateway.analytics.outlook import (
    BudgetOutlook,
    BudgetSpend,
    Clock,
    Forecaster,
    SeriesKey,
    SpendOutlook,
    Unit,
    budget_outlook,
    daily_series,
    spend_outlook,
    total_series,
)
from gateway.analytics.rollupdata import RollupData
from gateway.rollupformat import DAILY
from gateway.store.rollups import read_rollups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry


@dataclass(frozen=True, slots=True)
class Outlooks:
    clock: Clock
    history_start: date  # the first day the models could see
    history_end: date  # the last complete day: yesterday
    teams: tuple[SpendOutlook, ...]
    total: SpendOutlook | None  # every team's spend summed (None when asked for one team)
    budgets: tuple[BudgetOutlook, ...]


async def budget_spends(
    registry: BudgetRegistry, ledger: BudgetLedger, teams: Iterable[str] | None = None
) -> list[BudgetSpend]:
    """Every budget in force (of `teams`, if given) with its current period's counters, in the
    period of the ledger's clock. Reads only. Raises RedisError / OSError."""
    await registry.refresh()  # what admins created on other replicas
    wanted = None if teams is None else set(teams)
    spends = []
    for team in sorted({b.team for b in registry.all()}):
        if wanted is not None and team not in wanted:
            continue
        for status in await ledger.budget_status(team, registry.all(team)):
            spends.append(
                BudgetSpend(
                    status.budget,
                    status.period_id,
                    status.period_end,
                    status.spent_nano,
                    status.spent_tokens,
                )
            )
    return spends


async def outlooks(
    redis: Redis,
    forecaster: Forecaster,
    clock: Clock,
    *,
    history_days: int,
    teams: Sequence[str],
    budgets: Sequence[BudgetSpend] = (),
    horizon_days: int = 30,
    spend: bool = True,
    total: bool = True,
) -> Outlooks:
    """Outlooks of `budgets` and (with `spend`) of each of `teams` and (with `total`) of their
    sum, fitted on the last `history_days` complete days. The fitting runs in a thread: a first
    fit of many series takes seconds, and the event loop may be serving requests."""
    today = clock.today
    history_end = today - timedelta(days=1)
    history_start = today - timedelta(days=history_days)
    first = min(history_start, today.replace(day=1))  # month to date needs the whole month
    dims = {"team"} | {b.series_key("usd").dimension for b in budgets}
    wanted = set(teams) | {b.budget.team for b in budgets}
    hashes = await read_rollups(redis, wanted, first, today, DAILY, sorted(dims))
    data = RollupData.from_hashes(DAILY, first, today, hashes)

    def compute() -> Outlooks:
        fulls = {t: daily_series(data, SeriesKey(t, "team", t, "usd"), first, today) for t in teams}
        team_outlooks = tuple(
            _spend(t, fulls[t], first, history_start, clock, forecaster, horizon_days)
            for t in (teams if spend else ())
        )
        summed = None
        if spend and total:
            summed = _spend(
                "*",
                total_series(list(fulls.values())),
                first,
                history_start,
                clock,
                forecaster,
                horizon_days,
            )
        budget_outlooks = []
        for budget in budgets:
            fits = {
                unit: forecaster.fitted(
                    daily_series(data, budget.series_key(unit), history_start, history_end)
                )
                for unit, limit in _limits(budget)
                if limit is not None
            }
            budget_outlooks.append(
                budget_outlook(budget, fits.get("usd"), fits.get("tokens"), clock)
            )
        return Outlooks(
            clock, history_start, history_end, team_outlooks, summed, tuple(budget_outlooks)
        )

    return await asyncio.to_thread(compute)


def _spend(
    name: str,
    full: Sequence[int],
    first: date,
    history_start: date,
    clock: Clock,
    forecaster: Forecaster,
    horizon_days: int,
) -> SpendOutlook:
    """The outlook of a series running from `first` to today."""
    history = full[(history_start - first).days : -1]
    month_to_date = sum(full[(clock.today.replace(day=1) - first).days :])
    fitted = forecaster.fitted(history)
    return spend_outlook(name, fitted, clock, month_to_date, full[-1], horizon_days)


def _limits(spend: BudgetSpend) -> tuple[tuple[Unit, int | None], ...]:
    return (("usd", spend.budget.limit_nano), ("tokens", spend.budget.limit_tokens))
