"""The scorecard report: reads what `analytics.scorecard` needs from the store (daily rollups,
budgets in force, their refusal counts, the month's anomalies) and renders its result as a
Report (one line per figure, per team), for `spendgate report scorecard` and
`GET /admin/reports/scorecard`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.analytics.outlook import Forecaster
from gateway.analytics.rollupdata import month_range
from gateway.analytics.scorecard import (
    Scorecard,
    ScorecardInputs,
    TeamScorecard,
    comparison,
    forecast_month,
    scorecard,
)
from gateway.analytics.tagging import tagging_compliance
from gateway.recommending import load_opportunities
from gateway.reports.build import Period, Report
from gateway.reports.load import load_rollups
from gateway.reviewing import anomaly_counts
from gateway.store.rollups import known_teams
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

COLUMNS = ("team", "line", "value", "detail")
_DIMENSIONS = ("team", "project", "model", "key", "tag")


async def build_scorecard(
    config: Config,
    redis: Redis,
    registry: BudgetRegistry,
    ledger: BudgetLedger,
    forecaster: Forecaster,
    month: str,
    now: float,
) -> Scorecard:
    today = datetime.fromtimestamp(now, UTC).date()
    start, end, previous_start, _ = comparison(month, today)
    last = month_range(month)[1]
    teams = await known_teams(redis, config.teams)
    await registry.refresh()
    # From the month before (month over month) to the week after (a week crossing its end).
    data = await load_rollups(
        redis, teams, previous_start, last + timedelta(days=6), dimensions=_DIMENSIONS
    )
    judged_start, judged_last = month_range(forecast_month(month, today))
    history_days = config.forecasts.history_days
    history = await load_rollups(
        redis, teams, judged_start - timedelta(days=history_days), judged_last, dimensions=("team",)
    )
    refusals = {team: await ledger.refusals(team, month) for team in teams}
    # The charge lines of the month's days carry each charge's attribution and tags.
    lines = await load_rollups(redis, teams, start, end, dimensions=("line",))
    inputs = ScorecardInputs(
        month=month,
        today=today,
        data=data,
        history=history,
        teams=config.teams,
        budgets=registry.all(),
        refusals=refusals,
        anomalies=await anomaly_counts(redis, start, end),
        opportunities=await load_opportunities(
            config, redis, start, end, registry.all(), whole_month=end == last
        ),
        history_days=history_days,
        tagging=tagging_compliance(lines, config.policies, config.teams),
    )
    # Fitting a forecast per team takes a while: not on the event loop.
    return await asyncio.to_thread(scorecard, inputs, forecaster)


async def scorecard_report(
    config: Config,
    redis: Redis,
    registry: BudgetRegistry,
    ledger: BudgetLedger,
    forecaster: Forecaster,
    period: Period,
    now: float,
) -> Report:
    if period.month is None:
        raise ValueError("a scorecard covers one calendar month: give it as YYYY-MM")
    result = await build_scorecard(config, redis, registry, ledger, forecaster, period.month, now)
    rows = tuple(row for card in result.teams for row in team_lines(card, result))
    return Report("scorecard", period, COLUMNS, rows, result.to_dict())


def team_lines(card: TeamScorecard, result: Scorecard) -> Iterable[tuple[str, ...]]:
    """The scorecard of one team as (team, line, value, detail) rows."""
    u, team = card.usage, card.team
    days = f"{result.start.isoformat()}..{result.end.isoformat()}"
    yield team, "cost", _usd(u.cost_nano), f"{days}; {u.requests} requests; {u.tokens} tokens"
    for b in card.budgets:
        d = b.to_dict()
        over = f"{d['periods_at_limit']} of {d['periods']} {b.budget.period} periods at limit"
        if b.budget.period == "total":
            over = "total budget"
        yield (
            team,
            f"budget {b.budget.name}",
            f"{d['month_spent']} of {d['limit']}" + (" tokens" if b.unit == "tokens" else ""),
            f"{d['scope']}, {b.budget.period}, {b.budget.on_exceed}; {over}; peak "
            f"{_pct(d['peak_pct'])}; {b.blocked} blocked; {b.downgraded} downgraded",
        )
    if not card.budgets:
        yield team, "budgets", "none", "no budget limits this team's spend"
    yield (
        team,
        "allocated",
        _pct(card.allocated_pct),
        f"{_usd(card.allocated_nano)} of {_usd(u.request_cost_nano)} request spend named a project",
    )
    yield team, "tagging compliance", *_tagging(card)
    yield team, "optimization score", *_optimization(card)
    yield (
        team,
        "cost per request",
        _usd(u.cost_per_request_nano),
        f"per 1k tokens {_usd(u.cost_per_1k_tokens_nano)}",
    )
    if card.units_name is not None:
        yield (
            team,
            f"cost per {card.units_name}",
            _usd(card.cost_per_unit_nano),
            f"{card.units} {card.units_name} (monthly count, prorated)",
        )
    if u.revenue_nano is not None:
        yield team, "margin", _usd(u.margin_nano), f"revenue {_usd(u.revenue_nano)}"
    drivers = "; ".join(
        f"{d.dimension} {d.value} {'+' if d.change_nano > 0 else ''}{_usd(d.change_nano)}"
        for d in card.drivers
    )
    yield (
        team,
        "month over month",
        _pct(card.change_pct, signed=True),
        f"{_usd(card.previous_nano)} on {result.previous_start.isoformat()}.."
        f"{result.previous_end.isoformat()}" + (f"; drivers: {drivers}" if drivers else ""),
    )
    f = card.forecast
    yield (
        team,
        f"forecast {f.month}",
        "n/a" if f.forecast_nano is None else _usd(f.forecast_nano),
        "too little history before the month"
        if f.forecast_nano is None
        else f"actual {_usd(f.actual_nano)}; error {_pct(f.error_pct, signed=True)}; 80 % "
        f"interval {_usd(f.low80_nano)}..{_usd(f.high80_nano)}",
    )
    a = card.anomalies
    yield team, "anomalies", str(a.opened), f"{a.confirmed} confirmed; {a.expected} expected"


def _tagging(card: TeamScorecard) -> tuple[str, str]:
    t = card.tagging
    if t is None:
        return "n/a", "no tag policy requires tags (policies.tags)"
    missing = "; ".join(f"{k} {_usd(v)}" for k, v in sorted(t.missing_nano.items()))
    return (
        _pct(None if t.compliance is None else 100 * t.compliance),
        f"{_usd(t.tagged_nano)} of {_usd(t.spend_nano)} carried the tags the tag policies "
        "require" + (f"; spend lacking: {missing}" if missing else ""),
    )


def _optimization(card: TeamScorecard) -> tuple[str, str]:
    realized = _usd(card.usage.savings_nano)
    return (
        _pct(card.optimization_score_pct),
        f"{realized} saved; {_usd(card.savings_available_nano)} a month still available",
    )


def _usd(nano: int | None) -> str:
    return "" if nano is None else nano_to_usd_str(nano)


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f} %" if signed else f"{value:.1f} %"
