"""Budget periods and which budgets apply to a caller: pure functions, no I/O.

Periods are UTC calendar periods (ISO weeks start on Monday). The period id is part of a
budget's Redis key, so a new period is simply a new counter and nothing needs a reset job.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from gateway.config.model import BudgetConfig, Period
from gateway.types import Principal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


def _utc(now: datetime) -> datetime:
    # A naive datetime is taken to be UTC already (what utcfromtimestamp-style code produces).
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_id(period: Period, now: datetime) -> str:
    """ "d20261126", "w2026W48" (ISO year and week), "m202611" or "total"."""
    t = _utc(now)
    if period == "daily":
        return f"d{t.year:04d}{t.month:02d}{t.day:02d}"
    if period == "weekly":
        year, week, _ = t.isocalendar()
        return f"w{year:04d}W{week:02d}"
    if period == "monthly":
        return f"m{t.year:04d}{t.month:02d}"
    return "total"


def period_start(period: Period, now: datetime) -> datetime | None:
    """When the period containing `now` began (UTC); None for "total"."""
    t = _utc(now)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def period_end(period: Period, now: datetime) -> datetime | None:
    """When the period containing `now` ends, i.e. the next one starts (UTC); None for "total"."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_at(period: Period, epoch_ms: int) -> tuple[str, datetime | None]:
    """`period_id` and `period_end` at a time given in epoch milliseconds (the request path asks
    for every budget of every request, and a period only depends on the UTC day: memoized)."""
    return _period_of_day(period, epoch_ms // _DAY_MS)


@lru_cache(maxsize=256)
def _period_of_day(period: Period, day: int) -> tuple[str, datetime | None]:
    at = _EPOCH + timedelta(days=day)
    return period_id(period, at), period_end(period, at)


def hour_id(epoch_ms: int) -> str:
    """The UTC hour of a time in epoch milliseconds as "YYYYMMDDHH"."""
    return _hour_id(epoch_ms // _HOUR_MS)


@lru_cache(maxsize=64)
def _hour_id(hour: int) -> str:
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y%m%d%H")


@lru_cache(maxsize=256)
def end_of_period_id(pid: str) -> datetime | None:
    """The end of the period a `period_id` names (inverse of `period_id` + `period_end`)."""
    if pid == "total":
        return None
    try:
        if pid[0] == "d":
            start = datetime(int(pid[1:5]), int(pid[5:7]), int(pid[7:9]), tzinfo=UTC)
            return period_end("daily", start)
        if pid[0] == "w":
            year, _, week = pid[1:].partition("W")
            start = datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=UTC)
            return period_end("weekly", start)
        if pid[0] == "m":
            return period_end("monthly", datetime(int(pid[1:5]), int(pid[5:7]), 1, tzinfo=UTC))
    except (ValueError, IndexError):
        pass
    raise ValueError(f"not a period id: {pid!r}")


def budget_applies(budget: BudgetConfig, principal: Principal) -> bool:
    """Whether `budget` limits requests of `principal` (a budget only ever limits its own team)."""
    if budget.team != principal.team:
        return False
    if budget.scope == "team":
        return True
    if budget.scope == "key":
        return budget.match == principal.key_id
    if budget.scope == "project":
        return budget.match is not None and budget.match == principal.project
    # scope "tag": match is "name=value"
    if budget.match is None:
        return False
    name, sep, value = budget.match.partition("=")
    return bool(sep) and principal.tags.get(name) == value


def applicable(rules: Iterable[BudgetConfig], principal: Principal) -> tuple[BudgetConfig, ...]:
    """The budgets among `rules` that apply to `principal`, in rule order."""
    return tuple(b for b in rules if budget_applies(b, principal))
