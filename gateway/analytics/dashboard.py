"""What the built-in dashboard shows, as one JSON-ready document: per team, the showback figures
of the period, its spend day by day, its top models and keys, and its budgets, with the forecast
of the rest of the month, the spend anomalies, the scorecard and the recommendations as their
reports have them; and one team's full figures for the team API (`team_usage`: every project,
tag, model and key).
Built from the same rollups and the same `showback` as the reports, so its figures equal theirs
to the nano-dollar. Pure: the caller loads the rollups, the budgets' state and the reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from gateway.analytics.rollupdata import RollupData, day_bucket, days
from gateway.analytics.showback import Showback, TeamShowback
from gateway.types import nano_to_usd_str

TOP = 5  # models and keys listed per team
DIMENSIONS = ("team", "model", "key", "project", "tag")  # what `dashboard` reads


def dashboard(
    data: RollupData,
    spend: Showback,
    budgets: Sequence[Mapping[str, Any]],
    *,
    generated_at: str,
    forecast: Mapping[str, Any] | None = None,
    anomalies: Sequence[Mapping[str, Any]] = (),
    scorecard: Mapping[str, Any] | None = None,
    recommendations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The document for the teams of `spend` (all of them, or the one a team key may see).
    `budgets`: `budgets.usage.status_dict` of each budget of those teams; `forecast`: the
    forecast report's document for the same teams (None: no forecast shown); `anomalies`: the
    anomalies report's records of those teams; `scorecard`, `recommendations`: those reports'
    lines for those teams (None: not shown)."""
    day_list = days(data.start, data.end)
    daily = _daily_costs(data)
    teams = [_team(data, team, day_list, daily, budgets) for team in spend.teams]
    return {
        **_heading(data, day_list, generated_at),
        "total": {
            **spend.total.to_dict(),
            "daily_usd": _daily(daily, [t.team for t in spend.teams], day_list),
        },
        "teams": teams,
        "forecast": None if forecast is None else dict(forecast),
        "anomalies": [dict(a) for a in anomalies],
        "scorecard": None if scorecard is None else dict(scorecard),
        "recommendations": None if recommendations is None else dict(recommendations),
    }


def team_usage(
    data: RollupData,
    team: TeamShowback,
    budgets: Sequence[Mapping[str, Any]],
    *,
    generated_at: str,
) -> dict[str, Any]:
    """One team's figures in full: its showback entry (projects, tags and models, as the
    showback report has them), its spend per day, every key dearest first, and its budgets."""
    day_list = days(data.start, data.end)
    return {
        **_heading(data, day_list, generated_at),
        **team.to_dict(),
        "daily_usd": _daily(_daily_costs(data), [team.team], day_list),
        "keys": _top(_key_figures(data, team.team), "key_id", limit=None),
        "budgets": [b for b in budgets if b.get("team") == team.team],
    }


def _heading(data: RollupData, day_list: Sequence[date], generated_at: str) -> dict[str, Any]:
    return {
        "generated_at": generated_at,
        "start": data.start.isoformat(),
        "end": data.end.isoformat(),
        "currency": "USD",
        "days": [d.isoformat() for d in day_list],
    }


def _team(
    data: RollupData,
    team: TeamShowback,
    day_list: Sequence[date],
    daily: Mapping[tuple[str, str], int],
    budgets: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "team": team.team,
        "shared": team.shared,
        **team.usage.to_dict(),
        "daily_usd": _daily(daily, [team.team], day_list),
        "top_models": _top(
            {model: (u.cost_nano, u.requests) for model, u in team.models.items()}, "model"
        ),
        "top_keys": _top(_key_figures(data, team.team), "key_id"),
        "budgets": [b for b in budgets if b.get("team") == team.team],
    }


def _key_figures(data: RollupData, team: str) -> dict[str, tuple[int, int]]:
    """key id -> (cost, requests)."""
    keys = data.values(team, "key")
    return {k: (m.get("cost", 0), m.get("requests", 0)) for k, m in keys.items()}


def _daily_costs(data: RollupData) -> dict[tuple[str, str], int]:
    """(team, day bucket) -> cost, in one pass over the rollups."""
    out: dict[tuple[str, str], int] = {}
    for (team, bucket, dimension), values in data.cells.items():
        if dimension == "team":
            cost = sum(metrics.get("cost", 0) for metrics in values.values())
            out[team, bucket] = out.get((team, bucket), 0) + cost
    return out


def _daily(
    costs: Mapping[tuple[str, str], int], teams: Sequence[str], day_list: Sequence[date]
) -> list[str]:
    """Cost per day (USD, exact), summed over `teams`."""
    return [
        nano_to_usd_str(sum(costs.get((team, day_bucket(day)), 0) for team in teams))
        for day in day_list
    ]


def _top(
    figures: Mapping[str, tuple[int, int]], name: str, *, limit: int | None = TOP
) -> list[dict[str, Any]]:
    """The `limit` dearest (all: None), dearest first (ties by name)."""
    ranked = sorted(figures.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    return [
        {name: value, "cost_usd": nano_to_usd_str(cost), "requests": requests}
        for value, (cost, requests) in ranked
        if cost or requests
    ]
