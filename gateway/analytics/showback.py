"""Showback: what each team (and each of its projects, tags and models) spent over a date range,
with unit economics (cost per request, per 1k tokens), savings per optimization and, where
revenue is known, inference margin. Pure functions over `RollupData`.

Revenue of a team: revenue carried by its events, plus `revenue_per_request_nano` for each request
that carried none, plus `monthly_revenue_nano` spread evenly over the days of its month (the days
in range count). Unknown (None) when neither events nor config give any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.analytics.allocation import allocate
from gateway.analytics.rollupdata import RollupData, days, month_range
from gateway.config.model import TeamConfig
from gateway.rollupformat import SAVINGS_PREFIX, split_parts
from gateway.types import nano_to_usd_str


@dataclass(frozen=True, slots=True)
class Usage:
    cost_nano: int = 0  # everything billed: requests and posted external costs
    external_nano: int = 0  # of which posted external costs
    list_cost_nano: int = 0
    savings_nano: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    revenue_nano: int | None = None
    savings_by_optimization: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, m: Mapping[str, int], revenue_nano: int | None = None) -> Usage:
        savings = {
            split_parts(metric[len(SAVINGS_PREFIX) :])[0]: amount
            for metric, amount in sorted(m.items())
            if metric.startswith(SAVINGS_PREFIX)
        }
        return cls(
            cost_nano=m.get("cost", 0),
            external_nano=m.get("external", 0),
            list_cost_nano=m.get("list_cost", 0),
            savings_nano=m.get("savings", 0),
            prompt_tokens=m.get("prompt", 0),
            cached_prompt_tokens=m.get("cached_prompt", 0),
            completion_tokens=m.get("completion", 0),
            reasoning_tokens=m.get("reasoning", 0),
            requests=m.get("requests", 0),
            errors=m.get("errors", 0),
            cache_hits=m.get("cache_hits", 0),
            revenue_nano=revenue_nano,
            savings_by_optimization=savings,
        )

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens (cached and reasoning tokens are parts of those)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def request_cost_nano(self) -> int:
        return self.cost_nano - self.external_nano

    @property
    def cost_per_request_nano(self) -> int | None:
        return ratio(self.request_cost_nano, self.requests)

    @property
    def cost_per_1k_tokens_nano(self) -> int | None:
        return ratio(self.request_cost_nano * 1000, self.tokens)

    @property
    def margin_nano(self) -> int | None:
        return None if self.revenue_nano is None else self.revenue_nano - self.cost_nano

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": nano_to_usd_str(self.cost_nano),
            "external_usd": nano_to_usd_str(self.external_nano),
            "list_cost_usd": nano_to_usd_str(self.list_cost_nano),
            "savings_usd": nano_to_usd_str(self.savings_nano),
            "savings_by_optimization_usd": {
                k: nano_to_usd_str(v) for k, v in self.savings_by_optimization.items()
            },
            "requests": self.requests,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_per_request_usd": _usd(self.cost_per_request_nano),
            "cost_per_1k_tokens_usd": _usd(self.cost_per_1k_tokens_nano),
            "revenue_usd": _usd(self.revenue_nano),
            "margin_usd": _usd(self.margin_nano),
        }


@dataclass(frozen=True, slots=True)
class TeamShowback:
    team: str
    usage: Usage
    projects: Mapping[str, Usage]
    tags: Mapping[str, Usage]  # "key=value" -> usage (experiments, training runs)
    models: Mapping[str, Usage]  # requested model -> usage
    shared: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "shared": self.shared,
            **self.usage.to_dict(),
            "projects": {k: v.to_dict() for k, v in self.projects.items()},
            "tags": {k: v.to_dict() for k, v in self.tags.items()},
            "models": {k: v.to_dict() for k, v in self.models.items()},
        }


@dataclass(frozen=True, slots=True)
class Showback:
    start: date
    end: date
    teams: tuple[TeamShowback, ...]
    total: Usage

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "showback",
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "currency": "USD",
            "total": self.total.to_dict(),
            "teams": [t.to_dict() for t in self.teams],
        }


def showback(data: RollupData, teams: Mapping[str, TeamConfig]) -> Showback:
    """Per team (every configured team, and any other team with spend), sorted by name."""
    names = sorted(set(teams) | set(data.teams()))
    rows = tuple(_team(data, name, teams.get(name)) for name in names)
    total = _sum(r.usage for r in rows)
    return Showback(data.start, data.end, rows, total)


def _team(data: RollupData, team: str, config: TeamConfig | None) -> TeamShowback:
    rate = config.revenue_per_request_nano if config else None
    monthly = config.monthly_revenue_nano if config else None
    metrics = data.team_metrics(team)
    revenue = _revenue(metrics, rate)
    if monthly is not None:
        revenue = (revenue or 0) + prorated(monthly, data.start, data.end)

    def usages(dimension: str) -> dict[str, Usage]:
        values = data.values(team, dimension)
        return {v: Usage.from_metrics(m, _revenue(m, rate)) for v, m in sorted(values.items())}

    return TeamShowback(
        team=team,
        usage=Usage.from_metrics(metrics, revenue),
        projects=usages("project"),
        tags=usages("tag"),
        models=usages("model"),
        shared=bool(config and config.shared),
    )


def prorated(monthly_nano: int, start: date, end: date) -> int:
    """The part of a monthly amount that falls on the days start..end: each month's amount is
    split evenly (exactly, largest remainder) over its days, and the days in range summed."""
    total = 0
    months: dict[str, dict[str, int]] = {}
    for day in days(start, end):
        month = day.strftime("%Y-%m")
        if month not in months:
            first, last = month_range(month)
            months[month] = allocate(monthly_nano, {d.isoformat(): 1 for d in days(first, last)})
        total += months[month][day.isoformat()]
    return total


def _revenue(metrics: Mapping[str, int], rate: int | None) -> int | None:
    carried = metrics.get("revenue")
    if rate is None:
        return carried
    unpriced = metrics.get("requests", 0) - metrics.get("revenue_requests", 0)
    return (carried or 0) + rate * unpriced


def _sum(usages: Any) -> Usage:
    totals: dict[str, int] = {}
    savings: dict[str, int] = {}
    revenue: int | None = None
    for u in usages:
        for name in Usage.__dataclass_fields__:
            value = getattr(u, name)
            if isinstance(value, int) and name != "revenue_nano":
                totals[name] = totals.get(name, 0) + value
        for k, v in u.savings_by_optimization.items():
            savings[k] = savings.get(k, 0) + v
        if u.revenue_nano is not None:
            revenue = (revenue or 0) + u.revenue_nano
    return Usage(
        **totals, revenue_nano=revenue, savings_by_optimization=dict(sorted(savings.items()))
    )


def ratio(numerator: int, denominator: int) -> int | None:
    """numerator / denominator rounded half up to a whole nano; None when dividing by zero."""
    if denominator <= 0:
        return None
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


def _usd(nano: int | None) -> str | None:
    return None if nano is None else nano_to_usd_str(nano)
