"""Chargeback: one statement per team for a calendar month (UTC).

A team's total is its direct spend plus its part of every shared cost (`Config.shared_costs`,
each split by its own allocation) and of the spend of teams marked `shared: true` (split by
`Config.shared_spend_allocation`); a shared team's own statement passes its spend on, so its
total is zero. Proportional splits use the receiving teams' direct spend. Every split is exact,
so the statements always reconcile: sum of totals == direct spend of all teams + shared costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.analytics.allocation import allocate
from gateway.analytics.rollupdata import RollupData
from gateway.analytics.showback import Usage
from gateway.config.model import Allocation, Config
from gateway.rollupformat import split_parts
from gateway.types import nano_to_usd_str

SHARED_SPEND = "shared_spend"  # allocation label of re-allocated spend of shared teams


@dataclass(frozen=True, slots=True)
class Statement:
    team: str
    direct_nano: int
    allocations: Mapping[str, int]  # shared cost name (or SHARED_SPEND) -> amount allocated
    passed_on_nano: int  # a shared team's own spend, allocated to others (negative)
    total_nano: int
    usage: Usage
    projects: Mapping[str, int]  # direct cost per project
    project_models: Mapping[tuple[str, str], int]  # (project, requested model) -> direct cost
    shared: bool = False
    revenue_nano: int | None = None

    @property
    def margin_nano(self) -> int | None:
        return None if self.revenue_nano is None else self.revenue_nano - self.total_nano

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "shared": self.shared,
            "direct_usd": nano_to_usd_str(self.direct_nano),
            "allocated_usd": {k: nano_to_usd_str(v) for k, v in self.allocations.items()},
            "passed_on_usd": nano_to_usd_str(self.passed_on_nano),
            "total_usd": nano_to_usd_str(self.total_nano),
            "revenue_usd": _usd(self.revenue_nano),
            "margin_usd": _usd(self.margin_nano),
            "requests": self.usage.requests,
            "tokens": self.usage.tokens,
            "savings_usd": nano_to_usd_str(self.usage.savings_nano),
            "projects": {
                project: {
                    "direct_usd": nano_to_usd_str(cost),
                    "models": {
                        model: nano_to_usd_str(c)
                        for (p, model), c in self.project_models.items()
                        if p == project
                    },
                }
                for project, cost in self.projects.items()
            },
        }


@dataclass(frozen=True, slots=True)
class Chargeback:
    month: str  # YYYY-MM
    statements: tuple[Statement, ...]
    shared_costs: Mapping[str, int]  # name -> monthly amount
    unallocated_nano: int = 0  # only when no team can receive shared costs
    labels: tuple[str, ...] = ()  # allocation columns, in order

    @property
    def direct_total_nano(self) -> int:
        return sum(s.direct_nano for s in self.statements)

    @property
    def shared_total_nano(self) -> int:
        return sum(self.shared_costs.values())

    @property
    def total_nano(self) -> int:
        return sum(s.total_nano for s in self.statements) + self.unallocated_nano

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "chargeback",
            "period": self.month,
            "currency": "USD",
            "direct_total_usd": nano_to_usd_str(self.direct_total_nano),
            "shared_costs_usd": {k: nano_to_usd_str(v) for k, v in self.shared_costs.items()},
            "unallocated_usd": nano_to_usd_str(self.unallocated_nano),
            "total_usd": nano_to_usd_str(self.total_nano),
            "statements": [s.to_dict() for s in self.statements],
        }


def chargeback(data: RollupData, config: Config, month: str) -> Chargeback:
    """Statements for `month` ("YYYY-MM") from daily rollups covering that month."""
    names = sorted(set(config.teams) | set(data.teams()))
    shared = {t for t in names if t in config.teams and config.teams[t].shared}
    receivers = [t for t in names if t not in shared]
    direct = {t: data.team_metrics(t).get("cost", 0) for t in names}
    basis = {t: direct[t] for t in receivers}
    allocations: dict[str, dict[str, int]] = {t: {} for t in names}
    passed_on = dict.fromkeys(names, 0)
    unallocated = 0

    def split(label: str, amount: int, how: Allocation) -> bool:
        if not receivers:
            return False
        for team, part in allocate(amount, basis, how.method, how.weights).items():
            allocations[team][label] = allocations[team].get(label, 0) + part
        return True

    for team in sorted(shared):
        if direct[team] and split(SHARED_SPEND, direct[team], config.shared_spend_allocation):
            passed_on[team] = -direct[team]
    costs = {c.name: c.monthly_nano for c in config.shared_costs}
    for cost in config.shared_costs:
        if not split(cost.name, cost.monthly_nano, cost.allocation):
            unallocated += cost.monthly_nano
    statements = tuple(
        _statement(data, config, t, direct[t], allocations[t], passed_on[t], t in shared)
        for t in names
    )
    labels = tuple(c.name for c in config.shared_costs) + ((SHARED_SPEND,) if shared else ())
    result = Chargeback(month, statements, costs, unallocated, labels)
    if result.total_nano != result.direct_total_nano + result.shared_total_nano:
        # The invariant this module exists for: a failure is a bug, never bad input.
        raise RuntimeError(f"chargeback for {month} does not reconcile")
    return result


def _statement(
    data: RollupData,
    config: Config,
    team: str,
    direct: int,
    allocations: Mapping[str, int],
    passed_on: int,
    shared: bool,
) -> Statement:
    metrics = data.team_metrics(team)
    team_config = config.teams.get(team)
    revenue: int | None = metrics.get("revenue")
    if team_config is not None:
        if team_config.revenue_per_request_nano is not None:
            unpriced = metrics.get("requests", 0) - metrics.get("revenue_requests", 0)
            revenue = (revenue or 0) + team_config.revenue_per_request_nano * unpriced
        if team_config.monthly_revenue_nano is not None:
            revenue = (revenue or 0) + team_config.monthly_revenue_nano
    projects = {p: m.get("cost", 0) for p, m in sorted(data.values(team, "project").items())}
    detail: dict[tuple[str, str], int] = {}
    for value, m in sorted(data.values(team, "project_model").items()):
        project, model = split_parts(value)[:2]
        detail[project, model] = m.get("cost", 0)
    return Statement(
        team=team,
        direct_nano=direct,
        allocations=dict(sorted(allocations.items())),
        passed_on_nano=passed_on,
        total_nano=direct + passed_on + sum(allocations.values()),
        usage=Usage.from_metrics(metrics),
        projects=projects,
        project_models=detail,
        shared=shared,
        revenue_nano=revenue,
    )


def _usd(nano: int | None) -> str | None:
    return None if nano is None else nano_to_usd_str(nano)
