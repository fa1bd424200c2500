"""The built-in dashboard: `/dashboard` serves the page (gateway/dashboard/), `/dashboard/data`
the figures it draws. The page is public and holds nothing; the data answers the admin key and
the reporting key with every team, and a team's own key (client or reader) with that team only,
from the same rollups, showback, budget counters, forecast, anomalies, scorecard and
recommendations reports as the reports and the admin API.

    GET /dashboard/data?start=YYYY-MM-DD&end=YYYY-MM-DD   (default: this month so far)

A period that ends today also carries the forecast of the rest of the month (the forecast
report's, to the month's last day); every period, the scorecard of the month it ends in and the
recommendations of the last 30 days (as the recommendations report gives them by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.analytics.anomaly import public_view
from gateway.analytics.dashboard import DIMENSIONS, dashboard
from gateway.analytics.rollupdata import RollupData
from gateway.analytics.showback import Showback, showback
from gateway.anomalies.alerts import describe
from gateway.anomalies.records import AnomalyStore
from gateway.app.admin import authorize, json_response
from gateway.app.admin_reports import forecast_of, recommendations_of, scorecard_of
from gateway.app.state import BUDGETS, CLOCK, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.usage import budget_usage, status_dict
from gateway.dashboard import ASSETS, asset
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.reports.build import Period
from gateway.reports.load import load_rollups
from gateway.reports.recommendations import default_period
from gateway.store.rollups import known_teams

# The page loads only what this gateway serves: no CDN, no inline script, no framing.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def dashboard_routes() -> list[web.RouteDef]:
    return [
        web.get("/dashboard", _page),
        web.get("/dashboard/app.js", _page),
        web.get("/dashboard/app.css", _page),
        web.get("/dashboard/data", dashboard_data),
    ]


async def _page(request: web.Request) -> web.Response:
    name = request.path.removeprefix("/dashboard").lstrip("/") or "index.html"
    return web.Response(
        body=asset(name), content_type=ASSETS[name], charset="utf-8", headers=_HEADERS
    )


async def dashboard_data(request: web.Request) -> web.Response:
    # None: every team (the admin and reporting keys); else the team of the key sent.
    team = (await authorize(request, "team")).team
    unknown = sorted(set(request.query) - {"start", "end"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
    period = asked_period(request)
    spend = await load_spend(request, team, period)
    today = datetime.fromtimestamp(request.app[CLOCK](), UTC).date()
    forecast = await _forecast(request, team, today) if period.end == today else None
    scorecard = await _scorecard(request, team, period)
    now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
    recommended = await recommendations_of(request, default_period(now), team)
    try:
        anomalies = await _anomalies(request, team, period)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    document = dashboard(
        spend.data,
        spend.showback,
        spend.budgets,
        generated_at=spend.as_of,
        forecast=forecast,
        anomalies=anomalies,
        scorecard=scorecard,
        recommendations={
            "period": recommended.period.label,
            "monthly_saving_usd": recommended.document["monthly_saving_usd"],
            "rows": [dict(zip(recommended.columns, row, strict=True)) for row in recommended.rows],
        },
    )
    return json_response(document, headers={"Cache-Control": "no-store"})


async def _forecast(request: web.Request, team: str | None, today: date) -> dict[str, Any]:
    """The forecast report's document (the viewer's teams and budgets), from today to the
    month's last day."""
    next_month = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    report = await forecast_of(request, team, (next_month - today).days)
    return dict(report.document)


async def _scorecard(request: web.Request, team: str | None, period: Period) -> dict[str, Any]:
    """The scorecard of the month the period ends in: the report's lines (team, line, value,
    detail) of the viewer's teams."""
    month = Period.of_month(period.end.strftime("%Y-%m"))
    report = await scorecard_of(request, month)
    return {
        "period": month.month,
        "lines": [
            dict(zip(report.columns, row, strict=True))
            for row in report.rows
            if team is None or row[0] == team
        ],
    }


async def _anomalies(
    request: web.Request, team: str | None, period: Period
) -> list[dict[str, Any]]:
    """The anomalies that started in the period and those still open, newest first, as the
    anomalies report has them, each cause also worded as the report's table and the alerts
    word it."""
    start = datetime(period.start.year, period.start.month, period.start.day, tzinfo=UTC)
    until = start + timedelta(days=(period.end - period.start).days + 1)
    listed = await AnomalyStore(request.app[REDIS]).list(
        start.timestamp(), team=team, until_s=until.timestamp()
    )
    views = []
    for found in listed:
        view = public_view(found.anomaly, found.feedback)
        view["cause_texts"] = [describe(c, markup=False) for c in found.anomaly.causes]
        views.append(view)
    return views


@dataclass(frozen=True, slots=True)
class Spend:
    """What the dashboard and the team API read: rollups, their showback, budgets' state."""

    data: RollupData
    showback: Showback
    budgets: list[dict[str, Any]]  # `status_dict` of each budget
    as_of: str  # ISO 8601 UTC


async def load_spend(request: web.Request, team: str | None, period: Period) -> Spend:
    """One team's spend in `period` (every team's: None), as the reports compute it."""
    now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
    config, redis = request.app[LIVE_CONFIG].current, request.app[REDIS]
    try:
        teams = [team] if team else await known_teams(redis, config.teams)
        data = await load_rollups(redis, teams, period.start, period.end, "d", DIMENSIONS)
        budgets = await budget_usage(request.app[BUDGETS], request.app[LEDGER], team)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    configured = {name: t for name, t in config.teams.items() if name in teams}
    return Spend(
        data,
        showback(data, configured),
        [status_dict(s) for s in budgets],
        now.isoformat().replace("+00:00", "Z"),
    )


def asked_period(request: web.Request) -> Period:
    """`start` and `end` (YYYY-MM-DD, both or neither); default: this month so far."""
    return _period(request, datetime.fromtimestamp(request.app[CLOCK](), UTC))


def _period(request: web.Request, now: datetime) -> Period:
    start, end = request.query.get("start"), request.query.get("end")
    if start is None and end is None:
        return Period.month_to_date(now)
    if start is None or end is None:
        raise InvalidRequest("give both 'start' and 'end' (YYYY-MM-DD)", param="start")
    try:
        return Period.of_days(start, end)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="start") from None
