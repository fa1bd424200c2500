"""The recommendations report: what each team could change, with the evidence, the estimated
monthly saving and the change that realizes it (`analytics.recommendations`, read from the store
by `gateway.recommending`): from the rollups, the signal rollups, the budgets in force and the
virtual keys. Built for `spendgate report recommendations` and
`GET /admin/reports/recommendations`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.analytics.recommendations import Recommendation
from gateway.recommending import load_recommendations
from gateway.reports.build import Period, Report
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


async def recommendations_report(
    config: Config,
    redis: Redis,
    period: Period,
    budgets: Sequence[BudgetConfig],
    keys: Sequence[KeyInfo],
    team: str | None = None,
) -> Report:
    """The recommendations of `recommending.load_recommendations` as a report; `team`: only
    that team's."""
    found = await load_recommendations(
        config, redis, period.start, period.end, budgets, keys, whole_month=period.month is not None
    )
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
