"""The team scorecard of one month: budget adherence, allocation, optimization score, unit costs,
month-over-month change and its drivers, forecast against actual, anomalies. Pure functions over
daily `RollupData` and what the report layer read beside it (budget refusal counts, anomaly
records, savings the recommendations estimate); docs/scorecards.md defines every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.analytics.outlook import Forecaster, SeriesKey, Unit, daily_series, series_of
from gateway.analytics.rollupdata import RollupData, day_bucket, days, month_range
from gateway.analytics.showback import Usage, prorated, ratio
from gateway.analytics.tagging import Tagging, TeamTagging
from gateway.config.model import BudgetConfig, TeamConfig
from gateway.rollupformat import MISSING
from gateway.types import nano_to_usd_str

DRIVERS = 3  # the biggest changes named per month-over-month comparison


@dataclass(frozen=True, slots=True)
class Opportunity:
    """A saving the recommendations estimate a team could still make, per month."""

    team: str
    title: str
    monthly_savings_nano: int


@dataclass(frozen=True, slots=True)
class AnomalyCounts:
    opened: int = 0  # anomalies that started in the month
    confirmed: int = 0  # of which marked `real`
    expected: int = 0  # of which marked `expected`


@dataclass(frozen=True, slots=True)
class BudgetPeriod:
    period: str  # "2026-11-05", "2026-W45", "2026-11", "total"
    spent: int  # nano-USD or tokens, the budget's unit
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetAdherence:
    budget: BudgetConfig
    unit: Unit
    limit: int
    month_spent: int  # in the budget's scope, within the days asked for (the month)
    periods: tuple[BudgetPeriod, ...]
    blocked: int
    downgraded: int

    @property
    def periods_at_limit(self) -> int:
        return sum(1 for p in self.periods if p.spent >= p.limit)

    @property
    def peak_pct(self) -> float | None:
        return max((100 * p.spent / p.limit for p in self.periods), default=None)

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "budget": b.name,
            "scope": b.scope if b.match is None else f"{b.scope}:{b.match}",
            "period": b.period,
            "on_exceed": b.on_exceed,
            "unit": self.unit,
            "limit": amount_text(self.limit, self.unit),
            "month_spent": amount_text(self.month_spent, self.unit),
            "periods": len(self.periods),
            "periods_at_limit": self.periods_at_limit,
            "peak_pct": rounded_pct(self.peak_pct),
            "blocked": self.blocked,
            "downgraded": self.downgraded,
        }


@dataclass(frozen=True, slots=True)
class Driver:
    dimension: str  # "model" or "project"
    value: str
    change_nano: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "value": self.value,
            "change_usd": nano_to_usd_str(self.change_nano),
        }


@dataclass(frozen=True, slots=True)
class MonthForecast:
    """What the forecast made on the month's first day said of it, against what it cost."""

    month: str
    actual_nano: int
    forecast_nano: int | None  # None: too little history before the month
    low80_nano: int | None = None
    high80_nano: int | None = None

    @property
    def error_pct(self) -> float | None:
        if self.forecast_nano is None or not self.actual_nano:
            return None
        return 100 * (self.forecast_nano - self.actual_nano) / self.actual_nano

    def to_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "actual_usd": nano_to_usd_str(self.actual_nano),
            "forecast_usd": _usd(self.forecast_nano),
            "low80_usd": _usd(self.low80_nano),
            "high80_usd": _usd(self.high80_nano),
            "error_pct": rounded_pct(self.error_pct),
        }


@dataclass(frozen=True, slots=True)
class TeamScorecard:
    team: str
    usage: Usage
    budgets: tuple[BudgetAdherence, ...]
    allocated_nano: int  # request spend that named a project
    savings_available_nano: int  # a month, what the team's recommendations estimate
    units_name: str | None
    units: int | None  # business units in the month (prorated from the monthly count)
    previous_nano: int  # cost of the comparison days of the previous month
    drivers: tuple[Driver, ...]
    forecast: MonthForecast
    anomalies: AnomalyCounts
    opportunities: tuple[Opportunity, ...] = ()
    # Tagging compliance (`analytics.tagging`): None when no tag policy requires anything.
    tagging: TeamTagging | None = None

    @property
    def allocated_pct(self) -> float | None:
        spend = self.usage.request_cost_nano
        return None if spend <= 0 else 100 * self.allocated_nano / spend

    @property
    def optimization_score_pct(self) -> float | None:
        """Savings realized / (realized + still available): 100 when nothing is left to take;
        None when there was nothing to save either way."""
        possible = self.usage.savings_nano + self.savings_available_nano
        return None if possible <= 0 else 100 * self.usage.savings_nano / possible

    @property
    def cost_per_unit_nano(self) -> int | None:
        return None if not self.units else ratio(self.usage.cost_nano, self.units)

    @property
    def change_nano(self) -> int:
        return self.usage.cost_nano - self.previous_nano

    @property
    def change_pct(self) -> float | None:
        return None if self.previous_nano <= 0 else 100 * self.change_nano / self.previous_nano

    def to_dict(self) -> dict[str, Any]:
        u = self.usage
        return {
            "team": self.team,
            "cost_usd": nano_to_usd_str(u.cost_nano),
            "requests": u.requests,
            "tokens": u.tokens,
            "budgets": [b.to_dict() for b in self.budgets],
            "blocked": sum(b.blocked for b in self.budgets),
            "downgraded": sum(b.downgraded for b in self.budgets),
            "allocated_usd": nano_to_usd_str(self.allocated_nano),
            "allocated_pct": rounded_pct(self.allocated_pct),
            "tagging": None if self.tagging is None else self.tagging.to_dict(),
            "savings_realized_usd": nano_to_usd_str(u.savings_nano),
            "savings_available_usd": nano_to_usd_str(self.savings_available_nano),
            "optimization_score_pct": rounded_pct(self.optimization_score_pct),
            "opportunities": [
                {"title": o.title, "monthly_savings_usd": nano_to_usd_str(o.monthly_savings_nano)}
                for o in self.opportunities
            ],
            "cost_per_request_usd": _usd(u.cost_per_request_nano),
            "cost_per_1k_tokens_usd": _usd(u.cost_per_1k_tokens_nano),
            "units_name": self.units_name,
            "units": self.units,
            "cost_per_unit_usd": _usd(self.cost_per_unit_nano),
            "revenue_usd": _usd(u.revenue_nano),
            "margin_usd": _usd(u.margin_nano),
            "previous_usd": nano_to_usd_str(self.previous_nano),
            "change_usd": nano_to_usd_str(self.change_nano),
            "change_pct": rounded_pct(self.change_pct),
            "drivers": [d.to_dict() for d in self.drivers],
            "forecast": self.forecast.to_dict(),
            "anomalies": {
                "opened": self.anomalies.opened,
                "confirmed": self.anomalies.confirmed,
                "expected": self.anomalies.expected,
            },
        }


@dataclass(frozen=True, slots=True)
class Scorecard:
    month: str
    start: date
    end: date  # the last day counted: the month's, or today's while it runs
    previous_start: date
    previous_end: date
    teams: tuple[TeamScorecard, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "scorecard",
            "period": self.month,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "compared_with": {
                "start": self.previous_start.isoformat(),
                "end": self.previous_end.isoformat(),
            },
            "currency": "USD",
            "teams": [t.to_dict() for t in self.teams],
        }


@dataclass(frozen=True, slots=True)
class ScorecardInputs:
    """What the report layer read for one month (`month`, "YYYY-MM") on `today`."""

    month: str
    today: date
    data: RollupData  # daily: team, project, model, key, tag; the week before the month on
    history: RollupData  # daily "team" of the `history_days` before the forecast month
    teams: Mapping[str, TeamConfig]
    budgets: Sequence[BudgetConfig]
    refusals: Mapping[str, Mapping[tuple[str, str], int]]  # team -> (budget, action) -> count
    anomalies: Mapping[str, AnomalyCounts]
    opportunities: Sequence[Opportunity]  # the recommendations of the same days
    history_days: int
    tagging: Tagging | None = None  # the tagging compliance of the same days


def comparison(month: str, today: date) -> tuple[date, date, date, date]:
    """(start, end, previous start, previous end): the month (up to today while it runs) and
    as many days of the month before (all of it once the month is over)."""
    start, last = month_range(month)
    end = min(last, today) if start <= today else last
    previous_end = start - timedelta(days=1)
    previous_start = previous_end.replace(day=1)
    if end < last:  # month to date: the same days of the month before
        previous_end = min(previous_end, previous_start + (end - start))
    return start, end, previous_start, previous_end


def forecast_month(month: str, today: date) -> str:
    """The month a scorecard holds its forecast against: the period once it is over, else the
    one before (a forecast is judged on a whole month)."""
    start, last = month_range(month)
    if last < today:
        return month
    before = start - timedelta(days=1)
    return before.strftime("%Y-%m")


def scorecard(inputs: ScorecardInputs, forecaster: Forecaster) -> Scorecard:
    start, end, prev_start, prev_end = comparison(inputs.month, inputs.today)
    names = sorted(set(inputs.teams) | set(inputs.data.teams()))
    by_team: dict[str, list[Opportunity]] = {}
    for o in inputs.opportunities:
        by_team.setdefault(o.team, []).append(o)
    cards = []
    parts, histories = inputs.data.by_team(), inputs.history.by_team()
    tagging = {}
    if inputs.tagging is not None and inputs.tagging.required:
        tagging = {t.team: t for t in inputs.tagging.teams}
    for team in names:
        config = inputs.teams.get(team)
        if config is not None and config.shared:
            continue  # a shared team's spend is everyone's: chargeback allocates it
        data = parts.get(team, empty_like(inputs.data))
        this = _buckets(start, end)
        usage = _usage(data, team, this, config, start, end)
        budgets = tuple(
            budget_use(data, b, start, end, inputs.refusals.get(team, {}))
            for b in inputs.budgets
            if b.team == team
        )
        opportunities = sorted(by_team.get(team, ()), key=lambda o: -o.monthly_savings_nano)
        available = sum(o.monthly_savings_nano for o in opportunities)
        units = None
        if config is not None and config.monthly_units is not None:
            units = prorated(config.monthly_units, start, end)
        cards.append(
            TeamScorecard(
                team=team,
                usage=usage,
                budgets=budgets,
                allocated_nano=usage.request_cost_nano - _missing(data, team, "project", this),
                savings_available_nano=available,
                units_name=config.units_name if config else None,
                units=units,
                previous_nano=_cost(data, team, _buckets(prev_start, prev_end)),
                drivers=_drivers(data, team, this, _buckets(prev_start, prev_end)),
                forecast=month_forecast(
                    histories.get(team, empty_like(inputs.history)),
                    team,
                    forecast_month(inputs.month, inputs.today),
                    inputs.history_days,
                    forecaster,
                ),
                anomalies=inputs.anomalies.get(team, AnomalyCounts()),
                opportunities=tuple(opportunities),
                tagging=tagging.get(team),
            )
        )
    return Scorecard(
        inputs.month,
        start,
        end,
        prev_start,
        prev_end,
        tuple(cards),
    )


def month_forecast(
    history: RollupData, team: str, month: str, history_days: int, forecaster: Forecaster
) -> MonthForecast:
    """The month's total as forecast from the `history_days` complete days before it."""
    start, last = month_range(month)
    before = daily_series(
        history,
        SeriesKey(team, "team", team, "usd"),
        start - timedelta(days=history_days),
        start - timedelta(days=1),
    )
    actual = sum(daily_series(history, SeriesKey(team, "team", team, "usd"), start, last))
    model = forecaster.fitted(before).model
    if model is None:
        return MonthForecast(month, actual, None)
    total = model.total([1.0] * ((last - start).days + 1))
    return MonthForecast(
        month, actual, round(total.median), round(total.low80), round(total.high80)
    )


def _usage(
    data: RollupData,
    team: str,
    buckets: list[str],
    config: TeamConfig | None,
    start: date,
    end: date,
) -> Usage:
    metrics: dict[str, int] = {}
    for values in data.values(team, "team", buckets).values():
        for metric, amount in values.items():
            metrics[metric] = metrics.get(metric, 0) + amount
    revenue = metrics.get("revenue")
    if config is not None and config.revenue_per_request_nano is not None:
        unpriced = metrics.get("requests", 0) - metrics.get("revenue_requests", 0)
        revenue = (revenue or 0) + config.revenue_per_request_nano * unpriced
    if config is not None and config.monthly_revenue_nano is not None:
        revenue = (revenue or 0) + prorated(config.monthly_revenue_nano, start, end)
    return Usage.from_metrics(metrics, revenue)


def budget_use(
    data: RollupData,
    budget: BudgetConfig,
    start: date,
    end: date,
    refusals: Mapping[tuple[str, str], int],
) -> BudgetAdherence:
    """A budget's use over the days start..end: each of its periods that touch them (a week
    counted whole, a month from its first day to `end`), and what its scope spent in them.
    `data` must hold the week before `start`, the week after `end` and the month of `end`."""
    unit: Unit = "usd" if budget.limit_nano is not None else "tokens"
    limit = budget.limit_nano if budget.limit_nano is not None else budget.limit_tokens or 0
    key = series_of(budget, unit)
    first, last = data.start, data.end
    series = dict(zip(days(first, last), daily_series(data, key, first, last), strict=True))
    month = days(start, end)
    periods: list[BudgetPeriod] = []
    if budget.period == "daily":
        periods = [BudgetPeriod(d.isoformat(), series.get(d, 0), limit) for d in month]
    elif budget.period == "weekly":
        weeks: dict[str, int] = {}
        monday = start - timedelta(days=start.weekday())
        while monday <= end:
            iso = monday.isocalendar()
            weeks[f"{iso.year}-W{iso.week:02d}"] = sum(
                series.get(monday + timedelta(days=i), 0) for i in range(7)
            )
            monday += timedelta(days=7)
        periods = [BudgetPeriod(w, spent, limit) for w, spent in weeks.items()]
    elif budget.period == "monthly":
        to_date = days(end.replace(day=1), end)
        spent = sum(series.get(d, 0) for d in to_date)
        periods = [BudgetPeriod(end.strftime("%Y-%m"), spent, limit)]
    return BudgetAdherence(
        budget,
        unit,
        limit,
        sum(series.get(d, 0) for d in month),
        tuple(periods),
        refusals.get((budget.name, "block"), 0),
        refusals.get((budget.name, "downgrade"), 0),
    )


def _drivers(data: RollupData, team: str, this: list[str], before: list[str]) -> tuple[Driver, ...]:
    changes = []
    for dimension in ("model", "project"):
        now, then = data.values(team, dimension, this), data.values(team, dimension, before)
        for value in set(now) | set(then):
            change = now.get(value, {}).get("cost", 0) - then.get(value, {}).get("cost", 0)
            if change:
                changes.append(Driver(dimension, value, change))
    changes.sort(key=lambda d: (-abs(d.change_nano), d.dimension, d.value))
    return tuple(changes[:DRIVERS])


def _cost(data: RollupData, team: str, buckets: list[str]) -> int:
    return sum(m.get("cost", 0) for m in data.values(team, "team", buckets).values())


def _missing(data: RollupData, team: str, dimension: str, buckets: list[str]) -> int:
    metrics = data.values(team, dimension, buckets).get(MISSING, {})
    return metrics.get("cost", 0) - metrics.get("external", 0)


def empty_like(data: RollupData) -> RollupData:
    return RollupData(data.granularity, data.start, data.end, {})


def _buckets(start: date, end: date) -> list[str]:
    return [day_bucket(d) for d in days(start, end)]


def amount_text(amount: int, unit: Unit) -> str:
    return nano_to_usd_str(amount) if unit == "usd" else str(amount)


def _usd(nano: int | None) -> str | None:
    return None if nano is None else nano_to_usd_str(nano)


def rounded_pct(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
