"""The built-in dashboard: `/dashboard` serves the page (gateway/dashboard/), `/dashboard/data`
the figures it draws. The page is public and holds nothing; the data answers the admin key with
every team and a team's own virtual key with that team only, from the same rollups, showback and
budget counters as the reports and the admin API.

    GET /dashboard/data?start=YYYY-MM-DD&end=YYYY-MM-DD   (default: this month so far)
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from redis.exceptions import RedisError

from gateway.analytics.dashboard import DIMENSIONS, dashboard
from gateway.analytics.showback import showback
from gateway.app.admin import is_admin_key, json_response, presented_key
from gateway.app.state import BUDGETS, CLOCK, KEYRING, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.usage import budget_usage, status_dict
from gateway.dashboard import ASSETS, asset
from gateway.errors import AuthenticationFailed, InvalidRequest, ServiceUnavailable
from gateway.reports.build import Period
from gateway.reports.load import load_rollups
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
    team = await _viewer(request)
    unknown = sorted(set(request.query) - {"start", "end"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
    now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
    period = _period(request, now)
    config, redis = request.app[LIVE_CONFIG].current, request.app[REDIS]
    try:
        teams = [team] if team else await known_teams(redis, config.teams)
        data = await load_rollups(redis, teams, period.start, period.end, "d", DIMENSIONS)
        budgets = await budget_usage(request.app[BUDGETS], request.app[LEDGER], team)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    configured = {name: t for name, t in config.teams.items() if name in teams}
    document = dashboard(
        data,
        showback(data, configured),
        [status_dict(s) for s in budgets],
        generated_at=now.isoformat().replace("+00:00", "Z"),
    )
    return json_response(document, headers={"Cache-Control": "no-store"})


async def _viewer(request: web.Request) -> str | None:
    """None for the admin key (every team), else the team whose virtual key was sent."""
    given = presented_key(request)
    if given is None:
        raise AuthenticationFailed("send the admin key or a team's key as a Bearer token")
    if is_admin_key(request, given):
        return None
    principal = await request.app[KEYRING].resolve(given)
    if principal is None:
        raise AuthenticationFailed("invalid or revoked key")
    return principal.team


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
