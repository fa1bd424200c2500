"""Building a report (showback, chargeback, FOCUS) from the rollups in Redis: what the CLI and
the admin API both call. A `Report` (these, the forecast and the anomalies) is rendered as a
table, CSV or JSON by `render`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from gateway.analytics.chargeback import SHARED_SPEND, Chargeback, chargeback
from gateway.analytics.focus import FOCUS_COLUMNS, focus_rows
from gateway.analytics.rollupdata import month_range
from gateway.analytics.showback import Showback, Usage, showback
from gateway.analytics.tagging import Tagging, TeamTagging, tagging_compliance
from gateway.reports.kinds import DAY_RANGES, ReportKind
from gateway.reports.load import load_rollups
from gateway.store.rollups import known_teams
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config.model import Config

MAX_DAYS = 400  # daily rollups are kept 400 days

_NEEDS: Mapping[str, tuple[str, ...]] = {
    "showback": ("team", "project", "tag", "model"),
    "chargeback": ("team", "project", "project_model"),
    "focus": ("line", "team", "project", "project_model"),  # chargeback's, for allocations
    "tagging": ("line",),
}


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date  # inclusive
    month: str | None = None  # "YYYY-MM" when the period is one calendar month

    @classmethod
    def of_month(cls, month: str) -> Period:
        start, end = month_range(month)
        return cls(start, end, month)

    @classmethod
    def of_days(cls, start: str | date, end: str | date) -> Period:
        first = start if isinstance(start, date) else _day(start, "start")
        last = end if isinstance(end, date) else _day(end, "end")
        if last < first:
            raise ValueError(f"end {last} is before start {first}")
        if (last - first).days >= MAX_DAYS:
            raise ValueError(f"a report covers at most {MAX_DAYS} days")
        return cls(first, last)

    @classmethod
    def current_month(cls, now: datetime) -> Period:
        return cls.of_month(now.strftime("%Y-%m"))

    @classmethod
    def month_to_date(cls, now: datetime) -> Period:
        """The month of `now`, from its first day to today (a showback's default)."""
        return cls(now.date().replace(day=1), now.date())

    @property
    def label(self) -> str:
        return self.month or f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    period: Period
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # for table and CSV
    document: Mapping[str, Any]  # for JSON: the full structure
    title: str | None = None  # the table's heading, if not "<kind> <period> (USD)"


async def build_report(kind: ReportKind, config: Config, redis: Redis, period: Period) -> Report:
    if kind not in _NEEDS:
        raise ValueError(f"not a report of a period: {kind!r} (those are: {', '.join(_NEEDS)})")
    if kind not in DAY_RANGES and period.month is None:
        raise ValueError(f"a {kind} report covers one calendar month: give it as YYYY-MM")
    teams = await known_teams(redis, config.teams)
    data = await load_rollups(redis, teams, period.start, period.end, "d", _NEEDS[kind])
    if kind == "showback":
        return showback_report(period, showback(data, config.teams))
    if kind == "tagging":
        return tagging_report(period, tagging_compliance(data, config.policies, config.teams))
    if kind == "chargeback":
        assert period.month is not None
        return chargeback_report(period, chargeback(data, config, period.month))
    assert period.month is not None
    rows = focus_rows(data, config, period.month)
    return Report(
        kind="focus",
        period=period,
        columns=FOCUS_COLUMNS,
        rows=tuple(tuple(row[c] for c in FOCUS_COLUMNS) for row in rows),
        document={"report": "focus", "period": period.label, "rows": rows},
    )


def showback_report(period: Period, result: Showback) -> Report:
    optimizations = sorted(
        {k for t in result.teams for k in t.usage.savings_by_optimization}
        | set(result.total.savings_by_optimization)
    )
    columns = (
        "team",
        "scope",
        "name",
        "cost_usd",
        "external_usd",
        "list_cost_usd",
        "savings_usd",
        *(f"savings_{o}_usd" for o in optimizations),
        "requests",
        "errors",
        "cache_hits",
        "tokens",
        "cost_per_request_usd",
        "cost_per_1k_tokens_usd",
        "revenue_usd",
        "margin_usd",
    )

    def row(team: str, scope: str, name: str, u: Usage) -> tuple[str, ...]:
        return (
            team,
            scope,
            name,
            nano_to_usd_str(u.cost_nano),
            nano_to_usd_str(u.external_nano),
            nano_to_usd_str(u.list_cost_nano),
            nano_to_usd_str(u.savings_nano),
            *(nano_to_usd_str(u.savings_by_optimization.get(o, 0)) for o in optimizations),
            str(u.requests),
            str(u.errors),
            str(u.cache_hits),
            str(u.tokens),
            _usd(u.cost_per_request_nano),
            _usd(u.cost_per_1k_tokens_nano),
            _usd(u.revenue_nano),
            _usd(u.margin_nano),
        )

    rows: list[tuple[str, ...]] = []
    for t in result.teams:
        rows.append(row(t.team, "team", t.team, t.usage))
        for scope, parts in (("project", t.projects), ("tag", t.tags), ("model", t.models)):
            rows.extend(row(t.team, scope, name, u) for name, u in parts.items())
    rows.append(row("*", "total", "*", result.total))
    return Report("showback", period, columns, tuple(rows), result.to_dict())


def tagging_report(period: Period, result: Tagging) -> Report:
    """Per team: spend, fully tagged spend, compliance, and the spend lacking each tag."""
    columns = ("team", "spend_usd", "tagged_usd", "untagged_usd", "compliance_pct", "missing")

    def row(t: TeamTagging) -> tuple[str, ...]:
        share = t.compliance
        missing = "; ".join(
            f"{key} {nano_to_usd_str(amount)}" for key, amount in sorted(t.missing_nano.items())
        )
        return (
            t.team,
            nano_to_usd_str(t.spend_nano),
            nano_to_usd_str(t.tagged_nano),
            nano_to_usd_str(t.untagged_nano),
            "" if share is None else f"{share * 100:.1f}",
            missing,
        )

    title = f"tagging compliance {period.label} (USD)"
    if not result.required:
        title += ": no tag policy requires tags (policies.tags), so all spend complies"
    rows = (*(row(t) for t in result.teams), row(result.total))
    document = {"report": "tagging", "period": period.label, **result.to_dict()}
    return Report("tagging", period, columns, rows, document, title)


def chargeback_report(period: Period, result: Chargeback) -> Report:
    costs = [label for label in result.labels if label != SHARED_SPEND]
    has_shared = SHARED_SPEND in result.labels
    columns = (
        "team",
        "direct_usd",
        *(f"{label}_usd" for label in costs),
        *((f"{SHARED_SPEND}_usd",) if has_shared else ()),
        "total_usd",
        "revenue_usd",
        "margin_usd",
        "requests",
        "tokens",
    )
    rows: list[tuple[str, ...]] = []
    for s in result.statements:
        shared_spend = s.allocations.get(SHARED_SPEND, 0) + s.passed_on_nano
        rows.append(
            (
                s.team,
                nano_to_usd_str(s.direct_nano),
                *(nano_to_usd_str(s.allocations.get(label, 0)) for label in costs),
                *((nano_to_usd_str(shared_spend),) if has_shared else ()),
                nano_to_usd_str(s.total_nano),
                _usd(s.revenue_nano),
                _usd(s.margin_nano),
                str(s.usage.requests),
                str(s.usage.tokens),
            )
        )
    if result.unallocated_nano:  # no team could receive the shared costs
        cells = dict.fromkeys(columns, "")
        cells.update(
            {f"{label}_usd": nano_to_usd_str(result.shared_costs[label]) for label in costs}
        )
        cells.update(team="(unallocated)", total_usd=nano_to_usd_str(result.unallocated_nano))
        rows.append(tuple(cells.values()))
    totals = (
        "*",
        nano_to_usd_str(result.direct_total_nano),
        *(nano_to_usd_str(result.shared_costs[label]) for label in costs),
        *(("0.000000000",) if has_shared else ()),
        nano_to_usd_str(result.total_nano),
        "",
        "",
        str(sum(s.usage.requests for s in result.statements)),
        str(sum(s.usage.tokens for s in result.statements)),
    )
    rows.append(totals)
    return Report("chargeback", period, columns, tuple(rows), result.to_dict())


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD, not {text!r}") from None


def _usd(nano: int | None) -> str:
    return "" if nano is None else nano_to_usd_str(nano)
