"""Where spend is heading: each team's (and the total's) daily spend forecast, the month's
expected outcome, and for every budget its expected spend at the end of its period and the
moment it runs out at the forecast rate. Pure functions over `RollupData` and the budgets'
counters (read by the caller); the model is `forecast`'s.

What is forecast is request spend (rollup cost minus posted external costs) and, for token
budgets, prompt plus completion tokens: what budgets count. External costs are one-off
postings the model cannot foresee. A series starts on its first day with spend (a team that
began last week has a week of history, not months of zeros) and ends with yesterday, the last
complete UTC day; today so far counts as spent, and the rest of today is today's forecast times
the share of the day still to come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from gateway.analytics.forecast import Accuracy, Interval, Model, backtest, fit
from gateway.analytics.rollupdata import RollupData, day_bucket, days
from gateway.config.model import BudgetConfig

Unit = Literal["usd", "tokens"]
Status = Literal["exhausted", "runs_out", "lasts"]
SEARCH_DAYS = 366  # how far ahead a total budget's exhaustion is looked for
_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Fitted:
    """A series' model (None: too little history) and how well it forecast its own past."""

    model: Model | None
    accuracy: Accuracy | None
    history_days: int  # complete days since the first with spend


class Forecaster:
    """Fits series and remembers the fits: a series changes once a day (when a day completes),
    so a report or an alert run a few minutes later reuses the models. Bounded; owned by its
    caller (the admin API, the aggregator's forecast loop)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._fits: dict[tuple[int, ...], Fitted] = {}
        self._max = max_entries

    def fitted(self, series: Sequence[int]) -> Fitted:
        key = tuple(_from_first_spend(series))
        found = self._fits.get(key)
        if found is None:
            values = [float(v) for v in key]
            found = Fitted(fit(values), backtest(values), len(key))
            if len(self._fits) >= self._max:
                self._fits.clear()
            self._fits[key] = found
        return found


@dataclass(frozen=True, slots=True)
class Clock:
    """`now` and what follows from it: today, the share of today still to come."""

    now: datetime

    @classmethod
    def at(cls, epoch_s: float) -> Clock:
        return cls(datetime.fromtimestamp(epoch_s, UTC))

    @property
    def today(self) -> date:
        return self.now.date()

    @property
    def left_today(self) -> float:
        midnight = datetime(self.today.year, self.today.month, self.today.day, tzinfo=UTC)
        return 1.0 - (self.now - midnight).total_seconds() / _DAY_S

    def weights_until(self, end: datetime) -> list[float]:
        """Weights of the days from today up to `end` (a UTC midnight): the rest of today,
        then 1 per whole day."""
        whole = (end.date() - self.today).days - 1
        return [] if whole < 0 else [self.left_today] + [1.0] * whole

    def at_day_fraction(self, ahead: int, fraction: float) -> datetime:
        """The moment `fraction` of the way through day today+`ahead` (of what is left of it,
        for today)."""
        start = datetime(self.today.year, self.today.month, self.today.day, tzinfo=UTC)
        if ahead == 0:
            return self.now + timedelta(seconds=fraction * self.left_today * _DAY_S)
        return start + timedelta(days=ahead, seconds=fraction * _DAY_S)


@dataclass(frozen=True, slots=True)
class DayForecast:
    day: date
    interval: Interval


@dataclass(frozen=True, slots=True)
class SpendOutlook:
    """A team's (or the total's) request spend, in nano-USD."""

    name: str
    fitted: Fitted
    today_so_far: int
    month_to_date: int  # today so far included
    month_end: Interval | None  # the month's expected total
    days: tuple[DayForecast, ...]  # from today, whole days
    next_days: Interval | None  # the sum of `days`


@dataclass(frozen=True, slots=True)
class BudgetSpend:
    """A budget and its current period's counters (what `BudgetLedger.budget_status` reads)."""

    budget: BudgetConfig
    period_id: str
    period_end: datetime | None  # None for "total"
    spent_nano: int
    spent_tokens: int

    def series_key(self, unit: Unit) -> SeriesKey:
        return series_of(self.budget, unit)


@dataclass(frozen=True, slots=True)
class SeriesKey:
    team: str
    dimension: str  # a daily rollup dimension: team, key, project, tag
    value: str
    unit: Unit


@dataclass(frozen=True, slots=True)
class LimitOutlook:
    """One limit (USD or tokens) of a budget."""

    unit: Unit
    fitted: Fitted  # the model of the budget's spend (or tokens)
    limit: int
    spent: int
    period_end: Interval | None  # expected spend when the period ends (None: total budget)
    exhausted_at: datetime | None  # when it runs out at the forecast rate, if in the period
    status: Status

    @property
    def will_exceed(self) -> bool:
        """The expected spend at the period's end is over the limit: a forecasted alert."""
        return self.period_end is not None and self.period_end.median > self.limit


@dataclass(frozen=True, slots=True)
class BudgetOutlook:
    spend: BudgetSpend
    limits: tuple[LimitOutlook, ...]

    @property
    def will_exceed(self) -> bool:
        return any(limit.will_exceed for limit in self.limits)

    @property
    def exhausted_at(self) -> datetime | None:
        times = [limit.exhausted_at for limit in self.limits if limit.exhausted_at is not None]
        return min(times, default=None)


def series_of(budget: BudgetConfig, unit: Unit) -> SeriesKey:
    """The daily series a budget counts: its team's, or its key's, project's or tag's."""
    b = budget
    dimension, value = ("team", b.team) if b.scope == "team" else (b.scope, b.match or "")
    return SeriesKey(b.team, dimension, value, unit)


def daily_series(data: RollupData, key: SeriesKey, start: date, end: date) -> list[int]:
    """The daily amounts of one series from `start` to `end` inclusive (0 on days without)."""
    out = []
    for day in days(start, end):
        metrics = data.cells.get((key.team, day_bucket(day), key.dimension), {}).get(key.value)
        out.append(_amount(metrics or {}, key.unit))
    return out


def total_series(series: Sequence[Sequence[int]]) -> list[int]:
    """Day by day sum of series of equal length."""
    return [sum(day) for day in zip(*series, strict=True)] if series else []


def spend_outlook(
    name: str,
    fitted: Fitted,
    clock: Clock,
    month_to_date: int,
    today_so_far: int,
    horizon_days: int,
) -> SpendOutlook:
    model = fitted.model
    if model is None:
        return SpendOutlook(name, fitted, today_so_far, month_to_date, None, (), None)
    month_end = _next_month_start(clock.today)
    rest = model.total(clock.weights_until(month_end))
    daily = model.forecast(horizon_days)
    return SpendOutlook(
        name,
        fitted,
        today_so_far,
        month_to_date,
        rest.plus(month_to_date),
        tuple(
            DayForecast(clock.today + timedelta(days=i), interval)
            for i, interval in enumerate(daily)
        ),
        model.total([1.0] * horizon_days),
    )


def budget_outlook(
    budget: BudgetSpend, usd: Fitted | None, tokens: Fitted | None, clock: Clock
) -> BudgetOutlook:
    """The budget's limits against the forecasts of its series: `usd` for its USD limit,
    `tokens` for its token limit (each needed when the budget has that limit)."""
    limits = []
    b = budget.budget
    if b.limit_nano is not None and usd is not None:
        limits.append(_limit_outlook("usd", b.limit_nano, budget.spent_nano, budget, usd, clock))
    if b.limit_tokens is not None and tokens is not None:
        limits.append(
            _limit_outlook("tokens", b.limit_tokens, budget.spent_tokens, budget, tokens, clock)
        )
    return BudgetOutlook(budget, tuple(limits))


def _limit_outlook(
    unit: Unit, limit: int, spent: int, budget: BudgetSpend, fitted: Fitted, clock: Clock
) -> LimitOutlook:
    model, period_end = fitted.model, budget.period_end
    if spent >= limit:
        return LimitOutlook(unit, fitted, limit, spent, None, None, "exhausted")
    if model is None:
        return LimitOutlook(unit, fitted, limit, spent, None, None, "lasts")
    if period_end is None:
        at_end, pace = None, None
        weights = [clock.left_today] + [1.0] * (SEARCH_DAYS - 1)
    else:
        weights = clock.weights_until(period_end)
        at_end = model.total(weights).plus(spent)
        pace = at_end.median - spent
    exhausted = _runs_out(limit - spent, model, clock, weights, pace)
    status: Status = "lasts" if exhausted is None else "runs_out"
    return LimitOutlook(unit, fitted, limit, spent, at_end, exhausted, status)


def _runs_out(
    remaining: float, model: Model, clock: Clock, weights: Sequence[float], total: float | None
) -> datetime | None:
    """When `remaining` is used up, spending each day's forecast evenly over the day, over the
    days `weights` covers (what is left of today, then whole days); None if it lasts. With the
    period's `total` forecast, the days are scaled to add up to it (a median of a sum is not
    the sum of the days' medians), so a budget forecast over its limit runs out within it."""
    days = [i.median * w for i, w in zip(model.forecast(len(weights)), weights, strict=True)]
    if total is not None and sum(days) > 0:
        scale = total / sum(days)
        days = [d * scale for d in days]
    for ahead, spend in enumerate(days):
        if spend >= remaining and spend > 0:
            return clock.at_day_fraction(ahead, remaining / spend)
        remaining -= spend
    return None


def _amount(metrics: Mapping[str, int], unit: Unit) -> int:
    if unit == "tokens":
        return metrics.get("prompt", 0) + metrics.get("completion", 0)
    return metrics.get("cost", 0) - metrics.get("external", 0)


def _from_first_spend(series: Sequence[int]) -> Sequence[int]:
    for i, value in enumerate(series):
        if value:
            return series[i:]
    return ()


def _next_month_start(day: date) -> datetime:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)
