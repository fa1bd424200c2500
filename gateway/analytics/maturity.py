"""FinOps maturity, crawl / walk / run, for the organization and each team, from measured
signals: the share of spend allocated to a project, budgets (and whether they enforce), alert
webhooks, savings the optimizers made, anomalies people looked at, forecast accuracy, review
cadence and unit economics. A level is reached when every criterion of it and of the levels
below is met; each criterion says what was measured, and those of the next level not met are
what is missing. Pure; docs/scorecards.md has the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

LEVELS = ("crawl", "walk", "run")
REVIEW_WEEKS = 4  # the review cadence is judged on this many last complete weeks


@dataclass(frozen=True, slots=True)
class Signals:
    """What was measured of a team (or the organization) over the window."""

    spend_nano: int  # request spend
    allocated_nano: int  # of which named a project
    tagged_pct: float | None  # spend carrying the tags its tag policies require; None: no spend
    tag_policies: bool  # whether any tag policy requires tags
    list_cost_nano: int
    savings_nano: int
    budgets: int
    enforcing: int  # budgets that block or downgrade
    unbudgeted: tuple[str, ...]  # teams with spend and no budget (the org; a team: itself)
    alerting: bool  # a webhook takes budget alerts
    anomalies: int  # anomalies that started in the window
    handled: int  # of which someone gave feedback
    mape_pct: float | None  # the daily spend forecast's backtested error; None: too little history
    weeks_reviewed: int  # of the last REVIEW_WEEKS
    reviews_scheduled: bool
    unit_economics: tuple[str, ...]  # teams with spend and neither units nor revenue known

    @property
    def allocated_pct(self) -> float | None:
        return None if self.spend_nano <= 0 else 100 * self.allocated_nano / self.spend_nano

    @property
    def savings_pct(self) -> float | None:
        return None if self.list_cost_nano <= 0 else 100 * self.savings_nano / self.list_cost_nano


@dataclass(frozen=True, slots=True)
class Criterion:
    level: str
    name: str
    requirement: str
    met: Callable[[Signals], bool]
    evidence: Callable[[Signals], str]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} %"


def _allocated(s: Signals) -> str:
    return f"{_pct(s.allocated_pct)} of request spend named a project"


def _tagged(s: Signals) -> str:
    if not s.tag_policies:
        return "no tag policy requires tags (policies.tags)"
    return f"{_pct(s.tagged_pct)} of spend carried the tags its tag policies require"


def _budgets(s: Signals) -> str:
    text = f"{s.budgets} budgets ({s.enforcing} block or downgrade)"
    return text + (f"; no budget: {', '.join(s.unbudgeted)}" if s.unbudgeted else "")


def _savings(s: Signals) -> str:
    return f"optimizers saved {_pct(s.savings_pct)} of list cost"


def _anomalies(s: Signals) -> str:
    return f"{s.handled} of {s.anomalies} anomalies given feedback"


def _forecast(s: Signals) -> str:
    if s.mape_pct is None:
        return "too little history to backtest"
    return f"daily forecast backtested MAPE {s.mape_pct:.1f} %"


def _reviews(s: Signals) -> str:
    scheduled = "scheduled" if s.reviews_scheduled else "not scheduled (alerts.review)"
    return f"digests posted {s.weeks_reviewed} of the last {REVIEW_WEEKS} weeks; {scheduled}"


def _units(s: Signals) -> str:
    if not s.unit_economics:
        return "units or revenue known"
    return f"neither units nor revenue known: {', '.join(s.unit_economics)}"


# The criteria of each level, in order: one line each to add one.
CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "walk",
        "allocation",
        ">= 80 % of spend allocated to a project",
        lambda s: (s.allocated_pct or 0) >= 80,
        _allocated,
    ),
    Criterion(
        "walk",
        "tagging",
        ">= 80 % of spend carries the tags its tag policies require",
        lambda s: not s.tag_policies or (s.tagged_pct or 0) >= 80,
        _tagged,
    ),
    Criterion(
        "walk",
        "budgets",
        "every team with spend has a budget",
        lambda s: not s.unbudgeted and s.budgets > 0,
        _budgets,
    ),
    Criterion(
        "walk",
        "alerts",
        "a webhook receives budget alerts",
        lambda s: s.alerting,
        lambda s: "a webhook takes budget_threshold" if s.alerting else "no webhook for budgets",
    ),
    Criterion(
        "walk", "optimization", "optimizers saved something", lambda s: s.savings_nano > 0, _savings
    ),
    Criterion(
        "walk",
        "forecast",
        "forecast MAPE <= 30 %",
        lambda s: s.mape_pct is not None and s.mape_pct <= 30,
        _forecast,
    ),
    Criterion(
        "run",
        "allocation",
        ">= 95 % of spend allocated to a project",
        lambda s: (s.allocated_pct or 0) >= 95,
        _allocated,
    ),
    Criterion(
        "run",
        "tagging",
        "tag policies require tags, and >= 95 % of spend carries them",
        lambda s: s.tag_policies and (s.tagged_pct or 0) >= 95,
        _tagged,
    ),
    Criterion(
        "run",
        "budgets",
        "budgets enforce (block or downgrade)",
        lambda s: s.enforcing > 0 and not s.unbudgeted,
        _budgets,
    ),
    Criterion(
        "run",
        "optimization",
        "optimizers save >= 10 % of list cost",
        lambda s: (s.savings_pct or 0) >= 10,
        _savings,
    ),
    Criterion(
        "run",
        "anomalies",
        ">= 80 % of anomalies given feedback",
        lambda s: s.handled * 5 >= s.anomalies * 4,
        _anomalies,
    ),
    Criterion(
        "run",
        "forecast",
        "forecast MAPE <= 15 %",
        lambda s: s.mape_pct is not None and s.mape_pct <= 15,
        _forecast,
    ),
    Criterion(
        "run",
        "review cadence",
        f"weekly reviews posted >= 3 of the last {REVIEW_WEEKS} weeks",
        lambda s: s.weeks_reviewed >= 3,
        _reviews,
    ),
    Criterion(
        "run",
        "unit economics",
        "units or revenue known for every team with spend",
        lambda s: not s.unit_economics,
        _units,
    ),
)


@dataclass(frozen=True, slots=True)
class Check:
    level: str
    name: str
    requirement: str
    met: bool
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "criterion": self.name,
            "requirement": self.requirement,
            "met": self.met,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    subject: str  # a team, or "*" for the organization
    level: str
    checks: tuple[Check, ...]

    @property
    def next_level(self) -> str | None:
        i = LEVELS.index(self.level)
        return LEVELS[i + 1] if i + 1 < len(LEVELS) else None

    @property
    def missing(self) -> tuple[Check, ...]:
        """What the next level needs that is not met (nothing at run)."""
        nxt = self.next_level
        return tuple(c for c in self.checks if c.level == nxt and not c.met)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "level": self.level,
            "next_level": self.next_level,
            "missing": [c.to_dict() for c in self.missing],
            "criteria": [c.to_dict() for c in self.checks],
        }


def assess(subject: str, signals: Signals, criteria: Sequence[Criterion] = CRITERIA) -> Assessment:
    checks = tuple(
        Check(c.level, c.name, c.requirement, c.met(signals), c.evidence(signals)) for c in criteria
    )
    level = LEVELS[0]
    for candidate in LEVELS[1:]:
        if all(c.met for c in checks if c.level == candidate):
            level = candidate
        else:
            break
    return Assessment(subject, level, checks)
