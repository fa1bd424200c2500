"""What the built-in dashboard shows, as one JSON-ready document: per team, the showback figures
of the period, its spend day by day, its top models and keys, and its budgets. Built from the
same rollups and the same `showback` as the reports, so its figures equal theirs to the
nano-dollar. Pure: the caller loads the rollups and the budgets' state.
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
) -> dict[str, Any]:
    """The document for the teams of `spend` (all of them, or the one a team key may see).
    `budgets`: `budgets.usage.status_dict` of each budget of those teams."""
    day_list = days(data.start, data.end)
    daily = _daily_costs(data)
    teams = [_team(data, team, day_list, daily, budgets) for team in spend.teams]
    return {
        "generated_at": generated_at,
        "start": data.start.isoformat(),
        "end": data.end.isoformat(),
        "currency": "USD",
        "days": [d.isoformat() for d in day_list],
        "total": {
            **spend.total.to_dict(),
            "daily_usd": _daily(daily, [t.team for t in spend.teams], day_list),
        },
        "teams": teams,
    }


def _team(
    data: RollupData,
    team: TeamShowback,
    day_list: Sequence[date],
    daily: Mapping[tuple[str, str], int],
    budgets: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    keys = data.values(team.team, "key")
    return {
        "team": team.team,
        "shared": team.shared,
        **team.usage.to_dict(),
        "daily_usd": _daily(daily, [team.team], day_list),
        "top_models": _top(
            {model: (u.cost_nano, u.requests) for model, u in team.models.items()}, "model"
        ),
        "top_keys": _top(
            {k: (m.get("cost", 0), m.get("requests", 0)) for k, m in keys.items()}, "key_id"
        ),
        "budgets": [b for b in budgets if b.get("team") == team.team],
    }


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


def _top(figures: Mapping[str, tuple[int, int]], name: str) -> list[dict[str, Any]]:
    """The `TOP` dearest, dearest first (ties by name)."""
    ranked = sorted(figures.items(), key=lambda item: (-item[1][0], item[0]))[:TOP]
    return [
        {name: value, "cost_usd": nano_to_usd_str(cost), "requests": requests}
        for value, (cost, requests) in ranked
        if cost or requests
    ]
