"""The weekly review digest: per team, one ISO week's spend against the week before, how far
each budget had burned by the week's end, the week's anomalies and the top recommendations.
Pure, over daily `RollupData`; its budget figures are the scorecard's (`budget_use`) and its
anomaly counts the report layer's, so a digest says what the reports say."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.analytics.rollupdata import RollupData, day_bucket, days
from gateway.analytics.scorecard import (
    AnomalyCounts,
    BudgetAdherence,
    Opportunity,
    amount_text,
    budget_use,
    empty_like,
    rounded_pct,
)
from gateway.config.model import BudgetConfig, TeamConfig
from gateway.types import nano_to_usd_str

TOP_RECOMMENDATIONS = 3


def week_start(week: str) -> date:
    """Monday of an ISO week written YYYY-Www; ValueError if it is not one."""
    year, sep, number = week.partition("-W")
    if not sep or len(year) != 4 or not year.isdigit() or len(number) != 2 or not number.isdigit():
        raise ValueError(f"expected a week as YYYY-Www (2026-W45), got {week!r}")
    try:
        return date.fromisocalendar(int(year), int(number), 1)
    except ValueError:
        raise ValueError(f"{week!r}: {year} has no week {int(number)}") from None


def week_label(monday: date) -> str:
    iso = monday.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def last_complete_week(today: date) -> date:
    """Monday of the last ISO week that has ended before `today`."""
    return today - timedelta(days=today.weekday() + 7)


@dataclass(frozen=True, slots=True)
class TeamReview:
    team: str
    cost_nano: int
    requests: int
    previous_nano: int
    budgets: tuple[BudgetAdherence, ...]
    anomalies: AnomalyCounts
    recommendations: tuple[Opportunity, ...]  # the team's top ones, dearest saving first

    @property
    def change_pct(self) -> float | None:
        if self.previous_nano <= 0:
            return None
        return 100 * (self.cost_nano - self.previous_nano) / self.previous_nano

    def burn(self, b: BudgetAdherence) -> float | None:
        """The share of its limit the budget's last period in the week had used by its end."""
        return 100 * b.periods[-1].spent / b.limit if b.periods and b.limit else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "cost_usd": nano_to_usd_str(self.cost_nano),
            "requests": self.requests,
            "previous_usd": nano_to_usd_str(self.previous_nano),
            "change_usd": nano_to_usd_str(self.cost_nano - self.previous_nano),
            "change_pct": rounded_pct(self.change_pct),
            "budgets": [
                {
                    "budget": b.budget.name,
                    "period": b.budget.period,
                    "unit": b.unit,
                    "limit": amount_text(b.limit, b.unit),
                    "period_id": b.periods[-1].period if b.periods else None,
                    "spent": amount_text(b.periods[-1].spent, b.unit) if b.periods else None,
                    "burn_pct": rounded_pct(self.burn(b)),
                    "periods_at_limit": b.periods_at_limit,
                    "peak_pct": rounded_pct(b.peak_pct),
                }
                for b in self.budgets
            ],
            "anomalies": {
                "opened": self.anomalies.opened,
                "confirmed": self.anomalies.confirmed,
                "expected": self.anomalies.expected,
            },
            "recommendations": [
                {"title": o.title, "monthly_savings_usd": nano_to_usd_str(o.monthly_savings_nano)}
                for o in self.recommendations
            ],
        }


@dataclass(frozen=True, slots=True)
class Review:
    week: str
    start: date  # Monday
    end: date  # Sunday
    teams: tuple[TeamReview, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "review",
            "week": self.week,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "currency": "USD",
            "teams": [t.to_dict() for t in self.teams],
        }


def review(
    monday: date,
    data: RollupData,
    teams: Mapping[str, TeamConfig],
    budgets: Sequence[BudgetConfig],
    anomalies: Mapping[str, AnomalyCounts],
    opportunities: Sequence[Opportunity],
) -> Review:
    """`data`: daily rollups ("team" and the budgets' dimensions) from the first of the month
    before `monday` (the week before, the month to date) to the Sunday after next."""
    sunday = monday + timedelta(days=6)
    this = [day_bucket(d) for d in days(monday, sunday)]
    before = [day_bucket(d) for d in days(monday - timedelta(days=7), monday - timedelta(days=1))]
    out = []
    parts = data.by_team()
    for team in sorted(set(teams) | set(data.teams())):
        config = teams.get(team)
        if config is not None and config.shared:
            continue
        part = parts.get(team, empty_like(data))
        week = _team_metrics(part, team, this)
        mine = sorted(
            (o for o in opportunities if o.team == team), key=lambda o: -o.monthly_savings_nano
        )
        out.append(
            TeamReview(
                team=team,
                cost_nano=week.get("cost", 0),
                requests=week.get("requests", 0),
                previous_nano=_team_metrics(part, team, before).get("cost", 0),
                budgets=tuple(
                    budget_use(part, b, monday, sunday, {}) for b in budgets if b.team == team
                ),
                anomalies=anomalies.get(team, AnomalyCounts()),
                recommendations=tuple(mine[:TOP_RECOMMENDATIONS]),
            )
        )
    return Review(week_label(monday), monday, sunday, tuple(out))


def digest_text(r: TeamReview, result: Review) -> str:
    """The digest of one team as a webhook message."""
    change = "" if r.change_pct is None else f" ({r.change_pct:+.1f} % on the week before)"
    lines = [
        f"Weekly review of {r.team}, {result.week} ({result.start.isoformat()}.."
        f"{result.end.isoformat()}): spent {amount_text(r.cost_nano, 'usd')} USD{change}, "
        f"{r.requests} request{'' if r.requests == 1 else 's'}."
    ]
    for b in r.budgets:
        burn = r.burn(b)
        if burn is not None and b.periods:
            lines.append(
                f"Budget {b.budget.name}: {burn:.1f} % of its {b.budget.period} limit used in "
                f"{b.periods[-1].period}"
                + (f"; at its limit in {b.periods_at_limit}" if b.periods_at_limit else "")
                + "."
            )
    a = r.anomalies
    lines.append(f"Anomalies: {a.opened} opened ({a.confirmed} confirmed, {a.expected} expected).")
    if not r.recommendations:
        lines.append("Recommendations: none.")
    else:
        for o in r.recommendations:
            saving = amount_text(o.monthly_savings_nano, "usd")
            lines.append(f"Recommendation: {o.title} (saves ~{saving} USD a month).")
    return "\n".join(lines)


def _team_metrics(data: RollupData, team: str, buckets: list[str]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for metrics in data.values(team, "team", buckets).values():
        for metric, amount in metrics.items():
            summed[metric] = summed.get(metric, 0) + amount
    return summed
