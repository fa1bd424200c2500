"""The anomalies report: the spend anomalies of a period (or still open), newest first, with
their numbers, ranked causes (worded as the alerts word them) and feedback. Built for
`spendgate report anomalies` and `GET /admin/anomalies` from the records in the store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.analytics.anomaly import public_view
from gateway.anomalies.alerts import describe
from gateway.anomalies.records import AnomalyStore, Listed
from gateway.reports.build import Period, Report

if TYPE_CHECKING:
    from redis.asyncio import Redis

COLUMNS = (
    "id",
    "team",
    "kind",
    "scope",
    "severity",
    "status",
    "start",
    "end",
    "buckets",
    "actual_usd",
    "expected_usd",
    "excess_usd",
    "z",
    "causes",
    "feedback",
)
DEFAULT_SINCE = "7d"
_RELATIVE = re.compile(r"(\d+)([dh])")
SINCE_HELP = "7d, 24h, 2026-11-01 or 2026-11-01T09:00 (UTC)"


def parse_since(text: str, now: datetime) -> datetime:
    """`Nd` / `Nh` before now, or an ISO date or time (UTC unless it says otherwise)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        amount, unit = int(relative[1]), relative[2]
        return now - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"since must be like {SINCE_HELP}, not {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def anomaly_rows(
    listed: list[Listed], since: datetime, team: str | None
) -> tuple[tuple[tuple[str, ...], ...], dict[str, Any]]:
    """(table rows, JSON document) of the anomalies listed."""
    views = [public_view(x.anomaly, x.feedback) for x in listed]
    rows = tuple(
        (
            v["id"],
            v["team"],
            v["kind"],
            v["scope"],
            v["severity"],
            v["status"] + (" (suppressed)" if v["suppressed_by"] else ""),
            v["start"],
            v["end"],
            str(v["buckets"]),
            v["actual_usd"],
            v["expected_usd"],
            v["excess_usd"],
            f"{v['z']:.1f}",
            "; ".join(describe(c, markup=False) for c in x.anomaly.causes),
            v["feedback"]["verdict"] if v["feedback"] else "",
        )
        for v, x in zip(views, listed, strict=True)
    )
    document = {
        "object": "list",
        "report": "anomalies",
        "since": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "team": team,
        "data": views,
    }
    return rows, document


async def anomalies_report(redis: Redis, since: datetime, team: str | None = None) -> Report:
    """The anomalies that started since `since` (and those still open), newest first."""
    since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    listed = await AnomalyStore(redis).list(since.timestamp(), team=team)
    rows, document = anomaly_rows(listed, since, team)
    day = since.date()
    title = f"anomalies since {since:%Y-%m-%dT%H:%M:%SZ}" + (f", team {team}" if team else "")
    return Report("anomalies", Period(day, day), COLUMNS, rows, document, title=f"{title} (USD)")
