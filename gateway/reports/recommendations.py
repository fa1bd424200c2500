"""The recommendations report: what each team could change, with the evidence, the estimated
monthly saving and the change that realizes it (`analytics.recommendations`), from the rollups,
the signal rollups, the budgets in force and the virtual keys. Built for `spendgate report
recommendations` and `GET /admin/reports/recommendations`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from gateway.analytics.recommendations import (
    DIMENSIONS,
    LOOKBACK_DAYS,
    KeySeen,
    Recommendation,
    recommendations,
)
from gateway.analytics.rollupdata import RollupData
from gateway.reports.build import Period, Report
from gateway.reports.load import load_rollups
from gateway.rollupformat import SIGNAL_DIMENSIONS
from gateway.store.rollups import known_teams
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config.model import BudgetConfig, Config
    from gateway.store.keys import KeyInfo

COLUMNS = ("team", "kind", "subject", "monthly_saving_usd", "evidence", "change")
DEFAULT_DAYS = 30  # without a period: the last 30 days, today included


def default_period(now: datetime) -> Period:
    today = now.astimezone(UTC).date()
    return Period.of_days(today - timedelta(days=DEFAULT_DAYS - 1), today)


async def load_recommendations(
    config: Config,
    redis: Redis,
    period: Period,
    budgets: Sequence[BudgetConfig],
    keys: Sequence[KeyInfo] = (),
) -> list[Recommendation]:
    """Every recommendation for the period, dearest saving first (what the report lists, and
    what the scorecard's savings still available and the review digest read). `budgets`:
    every budget in force (config and admin); `keys`: the virtual keys (revoked ones and those
    declared in the config are skipped; without keys, no idle key is found)."""
    teams = await known_teams(redis, config.teams)
    start = period.start - timedelta(days=LOOKBACK_DAYS)
    history = await load_rollups(redis, teams, start, period.end, "d", DIMENSIONS)
    # The signal rollups (the fingerprints above all) only for the period itself.
    signals = await load_rollups(redis, teams, period.start, period.end, "d", SIGNAL_DIMENSIONS)
    data = RollupData("d", start, period.end, {**history.cells, **signals.cells})
    # Hourly rollups are kept 35 days: an older period is judged on what is left of it.
    hourly = await load_rollups(redis, teams, period.start, period.end, "h", ("key",))
    seen = [
        KeySeen(k.key_id, k.team, k.name, _day(k.created_at))
        for k in keys
        if not k.revoked and k.source == "store" and k.team is not None
    ]
    # A large ledger takes seconds to read through: not on the event loop.
    return await asyncio.to_thread(
        partial(
            recommendations,
            data,
            config,
            period.start,
            period.end,
            budgets=budgets,
            keys=seen,
            whole_month=period.month is not None,
            hourly=hourly,
        )
    )


async def recommendations_report(
    config: Config,
    redis: Redis,
    period: Period,
    budgets: Sequence[BudgetConfig],
    keys: Sequence[KeyInfo],
    team: str | None = None,
) -> Report:
    """The recommendations of `load_recommendations` as a report; `team`: only that team's."""
    found = await load_recommendations(config, redis, period, budgets, keys)
    if team is not None:
        found = [r for r in found if r.team == team]
    return Report(
        kind="recommendations",
        period=period,
        columns=COLUMNS,
        rows=tuple(_row(r) for r in found),
        document={
            "object": "list",
            "report": "recommendations",
            "period": period.label,
            "team": team,
            "monthly_saving_usd": nano_to_usd_str(sum(r.monthly_saving_nano for r in found)),
            "data": [r.to_dict() for r in found],
        },
        title=f"recommendations {period.label}{f', team {team}' if team else ''}"
        " (estimated monthly savings, USD)",
    )


def _row(r: Recommendation) -> tuple[str, ...]:
    # One line per cell in a table: a YAML change reads as flow style there.
    change = " ".join(line.strip() for line in r.change.splitlines() if line.strip())
    return (r.team, r.kind, r.subject, nano_to_usd_str(r.monthly_saving_nano), r.evidence, change)


def _day(epoch_s: float | None) -> date | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).date()
