"""The forecast report: where each team's spend and each budget are heading, with the
forecast's own backtested accuracy. What `spendgate report forecast` and `GET /admin/forecast`
render (table, CSV, JSON).

Amounts already spent are exact decimal strings; forecasts are rounded to the cent (they are
estimates, and nine decimals would pretend otherwise); tokens are whole numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.analytics.forecast import MIN_DAYS, Interval
from gateway.analytics.outlook import (
    BudgetOutlook,
    Clock,
    Fitted,
    Forecaster,
    LimitOutlook,
    SpendOutlook,
    Unit,
)
from gateway.budgets.messages import format_usd, format_usd_estimate
from gateway.forecasting import Outlooks, budget_spends, outlooks
from gateway.reports.build import Period, Report
from gateway.store.rollups import known_teams
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

MAX_DAYS = 366
METHOD = (
    "Exponential smoothing (ETS / Holt-Winters, additive errors) with a weekly season and a "
    "linear or damped trend where the history supports them, fitted to daily request spend "
    "(or its logarithm) and chosen by AICc; accuracy from a rolling-origin backtest, 1-7 days "
    "ahead over the last 28 days of history"
)
_INTERVAL_FIELDS = ("forecast", "low80", "high80", "low95", "high95")


class UnknownTeam(ValueError):
    """The team asked for is neither in the config nor in the ledger."""


async def forecast_report(
    config: Config,
    redis: Redis,
    registry: BudgetRegistry,
    ledger: BudgetLedger,
    forecaster: Forecaster,
    now: float,
    *,
    team: str | None = None,
    days: int = 30,
) -> Report:
    """The report as of `now` (epoch seconds): every team (or `team`), the total, and every
    budget of those teams, `days` daily forecasts each."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be from 1 to {MAX_DAYS}, not {days}")
    teams = await known_teams(redis, config.teams)
    if team is not None:
        if team not in teams:
            raise UnknownTeam(f"unknown team {team!r} (known: {', '.join(teams) or 'none'})")
        teams = [team]
    result = await outlooks(
        redis,
        forecaster,
        Clock.at(now),
        history_days=config.forecasts.history_days,
        teams=teams,
        budgets=await budget_spends(registry, ledger, teams),
        horizon_days=days,
        total=team is None,
    )
    return _report(result, days)


def _report(result: Outlooks, days: int) -> Report:
    clock = result.clock
    period = Period(clock.today, clock.today + timedelta(days=days - 1))
    month = clock.today.strftime("%Y-%m")
    columns = (
        "team",
        "scope",
        "name",
        "period",
        "unit",
        "spent",
        *_INTERVAL_FIELDS,
        "limit",
        "runs_out_at",
        f"next_{days}d",
        "model",
        "history_days",
        "mape_pct",
        "coverage80_pct",
    )
    rows: list[tuple[str, ...]] = []
    spends = [*result.teams, *((result.total,) if result.total else ())]
    for s in spends:
        next_days = _amount(s.next_days.median, "usd") if s.next_days else ""
        rows.append(
            (
                s.name,
                "total" if s is result.total else "team",
                s.name,
                month,
                "usd",
                format_usd(s.month_to_date),
                *_cells(s.month_end, "usd"),
                "",
                "",
                next_days,
                *_fit_cells(s.fitted),
            )
        )
        if s is result.total:
            continue
        for b in (b for b in result.budgets if b.spend.budget.team == s.name):
            for limit in b.limits:
                rows.append(
                    (
                        s.name,
                        "budget",
                        b.spend.budget.name,
                        b.spend.period_id,
                        limit.unit,
                        _counted(limit.spent, limit.unit),
                        *_cells(limit.period_end, limit.unit),
                        _counted(limit.limit, limit.unit),
                        _runs_out(limit),
                        "",
                        *_fit_cells(limit.fitted),
                    )
                )
    document = {
        "report": "forecast",
        "as_of": _iso(clock.now),
        "history": {
            "first_day": result.history_start.isoformat(),
            "last_day": result.history_end.isoformat(),
        },
        "horizon_days": days,
        "method": METHOD,
        "teams": [
            {
                **_spend_dict(s, month),
                "budgets": [
                    _budget_dict(b) for b in result.budgets if b.spend.budget.team == s.name
                ],
            }
            for s in result.teams
        ],
        "total": None if result.total is None else _spend_dict(result.total, month),
    }
    title = f"forecast {period.label} as of {_iso(clock.now)} (USD, or tokens where unit says)"
    return Report("forecast", period, columns, tuple(rows), document, title)


def _spend_dict(s: SpendOutlook, month: str) -> dict[str, Any]:
    return {
        "team": s.name,
        **_fit_dict(s.fitted),
        "today_so_far_usd": nano_to_usd_str(s.today_so_far),
        "month": {
            "period": month,
            "to_date_usd": nano_to_usd_str(s.month_to_date),
            **_interval_dict(s.month_end, "usd"),
        },
        "next_days": None
        if s.next_days is None
        else {"days": len(s.days), **_interval_dict(s.next_days, "usd")},
        "daily": [{"date": d.day.isoformat(), **_interval_dict(d.interval, "usd")} for d in s.days],
    }


def _budget_dict(b: BudgetOutlook) -> dict[str, Any]:
    spend, budget = b.spend, b.spend.budget
    return {
        "name": budget.name,
        "scope": budget.scope,
        "match": budget.match,
        "period": budget.period,
        "period_id": spend.period_id,
        "period_end": None if spend.period_end is None else _iso(spend.period_end),
        "will_exceed": b.will_exceed,
        "exhausted_at": None if b.exhausted_at is None else _iso(b.exhausted_at),
        "limits": [_limit_dict(limit) for limit in b.limits],
    }


def _limit_dict(limit: LimitOutlook) -> dict[str, Any]:
    suffix = _suffix(limit.unit)
    spent = limit.spent if limit.unit == "tokens" else format_usd(limit.spent)
    cap = limit.limit if limit.unit == "tokens" else format_usd(limit.limit)
    return {
        "unit": limit.unit,
        **_fit_dict(limit.fitted),
        f"limit{suffix}": cap,
        f"spent{suffix}": spent,
        **{f"period_end_{k}": v for k, v in _interval_dict(limit.period_end, limit.unit).items()},
        "status": limit.status,
        "exhausted_at": None if limit.exhausted_at is None else _iso(limit.exhausted_at),
        "will_exceed": limit.will_exceed,
    }


def _fit_dict(fitted: Fitted) -> dict[str, Any]:
    model = fitted.model
    return {
        "model": None if model is None else model.name,
        "history_days": fitted.history_days,
        "accuracy": None if fitted.accuracy is None else fitted.accuracy.to_dict(),
    }


def _interval_dict(interval: Interval | None, unit: Unit) -> dict[str, Any]:
    suffix = _suffix(unit)
    values: Sequence[float | None] = (
        (None,) * 5
        if interval is None
        else (interval.median, interval.low80, interval.high80, interval.low95, interval.high95)
    )
    return {
        f"{name}{suffix}": None if v is None else round(v) if unit == "tokens" else _amount(v, unit)
        for name, v in zip(_INTERVAL_FIELDS, values, strict=True)
    }


def _cells(interval: Interval | None, unit: Unit) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in _interval_dict(interval, unit).values())


def _fit_cells(fitted: Fitted) -> tuple[str, str, str, str]:
    accuracy = fitted.accuracy
    mape = accuracy.mape_pct if accuracy else None
    return (
        f"none: needs {MIN_DAYS}+ days" if fitted.model is None else fitted.model.name,
        str(fitted.history_days),
        "" if mape is None else f"{mape:.1f}",
        "" if accuracy is None else f"{accuracy.coverage80_pct:.1f}",
    )


def _runs_out(limit: LimitOutlook) -> str:
    if limit.status == "exhausted":
        return "exhausted"
    return "" if limit.exhausted_at is None else _iso(limit.exhausted_at)


def _amount(value: float, unit: Unit) -> str:
    """A forecast: USD to the cent (`value` in nano-USD), tokens whole."""
    return str(round(value)) if unit == "tokens" else format_usd_estimate(value)


def _counted(value: int, unit: Unit) -> str:
    """An amount counted, not forecast: exact."""
    return str(value) if unit == "tokens" else format_usd(value)


def _suffix(unit: Unit) -> str:
    return "_tokens" if unit == "tokens" else "_usd"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
