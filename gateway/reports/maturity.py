"""The maturity report (`spendgate report maturity`, `GET /admin/reports/maturity`): measures
each team's and the organization's signals over the last WINDOW_DAYS complete days (and the
forecasts' history, the last weeks' review digests) and hands them to `analytics.maturity`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.analytics.forecast import Accuracy
from gateway.analytics.maturity import REVIEW_WEEKS, Assessment, Signals, assess
from gateway.analytics.outlook import Forecaster, SeriesKey, daily_series, total_series
from gateway.analytics.review import last_complete_week, week_label
from gateway.analytics.rollupdata import RollupData, day_bucket, days
from gateway.analytics.scorecard import AnomalyCounts, empty_like
from gateway.analytics.tagging import TeamTagging, tagging_compliance
from gateway.budgets.alerts import BUDGET_THRESHOLD
from gateway.reports.build import Period, Report
from gateway.reports.load import load_rollups
from gateway.reviewing import anomaly_counts, reviewed_weeks
from gateway.rollupformat import MISSING
from gateway.store.rollups import known_teams

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import BudgetConfig, Config

WINDOW_DAYS = 30
ORG = "*"
COLUMNS = ("subject", "level", "criterion", "met", "evidence")


async def maturity_report(
    config: Config, redis: Redis, registry: BudgetRegistry, forecaster: Forecaster, now: float
) -> Report:
    today = datetime.fromtimestamp(now, UTC).date()
    start, end = today - timedelta(days=WINDOW_DAYS), today - timedelta(days=1)
    names = await known_teams(redis, config.teams)
    teams = [t for t in names if not (t in config.teams and config.teams[t].shared)]
    await registry.refresh()
    data = await load_rollups(redis, teams, start, end, dimensions=("team", "project"))
    first = today - timedelta(days=config.forecasts.history_days)
    history = await load_rollups(redis, teams, first, end, dimensions=("team",))
    # The charge lines carry each charge's attribution and tags (tagging compliance).
    lines = await load_rollups(redis, teams, start, end, dimensions=("line",))
    anomalies = await anomaly_counts(redis, start, end)
    reviewed = await reviewed_weeks(redis)
    monday = last_complete_week(today)
    recent = {week_label(monday - timedelta(days=7 * i)) for i in range(REVIEW_WEEKS)}
    common = _Common(
        alerting=any(BUDGET_THRESHOLD in hook.events for hook in config.alerts.webhooks),
        weeks_reviewed=len(recent & set(reviewed)),
        reviews_scheduled=config.alerts.review is not None,
        tag_policies=bool(config.policies.tags),
    )

    def compute() -> list[Assessment]:
        tagging = tagging_compliance(lines, config.policies)
        tagged = {t.team: t for t in tagging.teams}
        series = {
            t: daily_series(history, SeriesKey(t, "team", t, "usd"), first, end) for t in teams
        }
        parts = data.by_team()
        per_team = {
            t: _signals(
                parts.get(t, empty_like(data)),
                [t],
                registry.all(t),
                anomalies.get(t, AnomalyCounts()),
                forecaster.fitted(series[t]).accuracy,
                tagged.get(t),
                config,
                common,
            )
            for t in teams
        }
        total = _signals(
            data,
            teams,
            registry.all(),
            AnomalyCounts(
                sum(a.opened for a in anomalies.values()),
                sum(a.confirmed for a in anomalies.values()),
                sum(a.expected for a in anomalies.values()),
            ),
            forecaster.fitted(total_series(list(series.values()))).accuracy,
            tagging.total,
            config,
            common,
        )
        return [assess(ORG, total)] + [assess(t, s) for t, s in per_team.items()]

    # Backtesting a forecast per team takes a while: not on the event loop.
    assessments = await asyncio.to_thread(compute)
    rows = tuple(row for a in assessments for row in _rows(a))
    document: dict[str, Any] = {
        "report": "maturity",
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "organization": assessments[0].to_dict(),
        "teams": [a.to_dict() for a in assessments[1:]],
    }
    title = f"maturity, {start.isoformat()}..{end.isoformat()}"
    return Report("maturity", Period(start, end), COLUMNS, rows, document, title=title)


@dataclass(frozen=True, slots=True)
class _Common:
    """The signals every subject shares: alert webhooks and review digests are the org's."""

    alerting: bool
    weeks_reviewed: int
    reviews_scheduled: bool
    tag_policies: bool


def _signals(
    data: RollupData,
    teams: Iterable[str],
    budgets: Iterable[BudgetConfig],
    anomalies: AnomalyCounts,
    accuracy: Accuracy | None,
    tagging: TeamTagging | None,
    config: Config,
    common: _Common,
) -> Signals:
    buckets = [day_bucket(d) for d in days(data.start, data.end)]
    totals: dict[str, int] = {}
    unallocated = 0
    spending = []
    for team in teams:
        team_totals = _sum(data.values(team, "team", buckets).values())
        for metric, amount in team_totals.items():
            totals[metric] = totals.get(metric, 0) + amount
        missing = data.values(team, "project", buckets).get(MISSING, {})
        unallocated += missing.get("cost", 0) - missing.get("external", 0)
        if team_totals.get("cost", 0) - team_totals.get("external", 0) > 0:
            spending.append(team)
    listed = list(budgets)
    budgeted = {b.team for b in listed}
    spend = totals.get("cost", 0) - totals.get("external", 0)
    return Signals(
        spend_nano=spend,
        allocated_nano=spend - unallocated,
        tagged_pct=None
        if tagging is None or tagging.compliance is None
        else 100 * tagging.compliance,
        tag_policies=common.tag_policies,
        list_cost_nano=totals.get("list_cost", 0) - totals.get("external", 0),
        savings_nano=totals.get("savings", 0),
        budgets=len(listed),
        enforcing=sum(1 for b in listed if b.on_exceed in ("block", "downgrade")),
        unbudgeted=tuple(t for t in spending if t not in budgeted),
        alerting=common.alerting,
        anomalies=anomalies.opened,
        handled=anomalies.confirmed + anomalies.expected,
        mape_pct=None if accuracy is None else accuracy.mape_pct,
        weeks_reviewed=common.weeks_reviewed,
        reviews_scheduled=common.reviews_scheduled,
        unit_economics=tuple(t for t in spending if not _unit_economics(t, config, data, buckets)),
    )


def _unit_economics(team: str, config: Config, data: RollupData, buckets: list[str]) -> bool:
    team_config = config.teams.get(team)
    if team_config is not None and (
        team_config.monthly_units is not None
        or team_config.revenue_per_request_nano is not None
        or team_config.monthly_revenue_nano is not None
    ):
        return True
    return _sum(data.values(team, "team", buckets).values()).get("revenue", 0) > 0


def _sum(values: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for metrics in values:
        for metric, amount in metrics.items():
            out[metric] = out.get(metric, 0) + amount
    return out


def _rows(a: Assessment) -> Iterable[tuple[str, ...]]:
    subject = "organization" if a.subject == ORG else a.subject
    nxt = a.next_level
    yield (
        subject,
        a.level,
        "level",
        "",
        f"next: {nxt}, missing {len(a.missing)}" if nxt else "every criterion met",
    )
    for c in a.checks:
        yield subject, c.level, c.name, "yes" if c.met else "no", f"{c.evidence} ({c.requirement})"
