"""The weekly review report (`spendgate report review --week`, `GET /admin/reports/review`):
per team, one figure a row, as the scheduled digest (`aggregator.reviews`) posts it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.analytics.review import TeamReview, last_complete_week, week_start
from gateway.analytics.scorecard import amount_text
from gateway.reports.build import Period, Report
from gateway.reviewing import build_review

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

COLUMNS = ("team", "line", "value", "detail")


async def review_report(
    config: Config, redis: Redis, registry: BudgetRegistry, week: str | None, now: float
) -> Report:
    """The review of `week` (YYYY-Www; None: the last complete week before `now`). Raises
    ValueError for a week that is not one."""
    today = datetime.fromtimestamp(now, UTC).date()
    monday = last_complete_week(today) if week is None else week_start(week)
    result = await build_review(config, redis, registry, monday)
    rows = tuple(row for team in result.teams for row in team_lines(team))
    period = Period(monday, monday + timedelta(days=6))
    title = f"review {result.week} ({result.start.isoformat()}..{result.end.isoformat()}, USD)"
    return Report("review", period, COLUMNS, rows, result.to_dict(), title=title)


def team_lines(r: TeamReview) -> Iterable[tuple[str, ...]]:
    change = "n/a" if r.change_pct is None else f"{r.change_pct:+.1f} %"
    yield r.team, "spend", amount_text(r.cost_nano, "usd"), f"{r.requests} requests"
    yield (
        r.team,
        "vs last week",
        change,
        f"{amount_text(r.previous_nano, 'usd')} the week before",
    )
    for b in r.budgets:
        burn = r.burn(b)
        last = b.periods[-1] if b.periods else None
        yield (
            r.team,
            f"budget {b.budget.name}",
            "n/a" if burn is None else f"{burn:.1f} %",
            f"{b.budget.period}"
            + (
                f" {last.period}: {amount_text(last.spent, b.unit)} of "
                f"{amount_text(b.limit, b.unit)}"
                if last
                else " (total)"
            )
            + (f"; {b.periods_at_limit} periods at limit" if b.periods_at_limit else ""),
        )
    a = r.anomalies
    yield r.team, "anomalies", str(a.opened), f"{a.confirmed} confirmed; {a.expected} expected"
    if not r.recommendations:
        yield r.team, "recommendations", "none", "nothing to recommend on the last 30 days"
    for o in r.recommendations:
        yield (
            r.team,
            "recommendation",
            amount_text(o.monthly_savings_nano, "usd"),
            f"{o.title} (a month)",
        )
