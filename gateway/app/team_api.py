"""The team API: a team reads its own spend and budgets with its own key, no admin key needed.

    GET /v1/spendgate/usage?team=T&start=YYYY-MM-DD&end=YYYY-MM-DD   (default: this month so far)
    GET /v1/spendgate/budgets?team=T
    GET /v1/spendgate/scorecard?team=T&period=YYYY-MM   (default: this month)

A team's client or reader key reads its own team (`team` may be left out; another team is a 403
`team_forbidden`); the admin and reporting keys read any team, named by `team`. The figures come
from the same rollups, showback, budget counters and forecasts as the admin reports, so they
equal them to the nano-dollar. Under /v1 so that a team's OpenAI base URL reaches it as is.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.analytics.dashboard import team_usage
from gateway.app.admin import Endpoint, Param, Reply, flag, json_response, team_in_view
from gateway.app.admin_reports import MONTH_PARAM, asked_month, forecast_of, scorecard_of
from gateway.app.dashboard import asked_period, load_spend
from gateway.app.state import BUDGETS, LEDGER, LIVE_CONFIG, REDIS
from gateway.budgets.usage import budget_usage, status_dict
from gateway.config.checks import JsonSchema
from gateway.errors import NotFound, ServiceUnavailable
from gateway.store.rollups import known_teams

USAGE_PATH = "/v1/spendgate/usage"
BUDGETS_PATH = "/v1/spendgate/budgets"
SCORECARD_PATH = "/v1/spendgate/scorecard"
# What of the scorecard report's heading a team's card carries (not the other teams' cards).
_SCORECARD_FIELDS = ("period", "start", "end", "compared_with", "currency")
# What of the forecast report's team entry the usage carries: the month's outlook and each
# budget's, with the model and its backtested accuracy (not the day-by-day series).
_FORECAST_FIELDS = ("model", "history_days", "accuracy", "month", "budgets")


async def usage(request: web.Request, _: None) -> web.Response:
    team = await _readable_team(request)
    spend = await load_spend(request, team, asked_period(request))
    [figures] = [t for t in spend.showback.teams if t.team == team]
    document = team_usage(spend.data, figures, spend.budgets, generated_at=spend.as_of)
    # Fitting the forecast is most of the answer's time: a poller may leave it out.
    wanted = "forecast" not in request.query or flag(request, "forecast")
    forecast = await _forecast(request, team) if wanted else None
    payload = {"object": "spendgate.usage", **document, "forecast": forecast}
    return json_response(payload, headers={"Cache-Control": "no-store"})


async def budgets(request: web.Request, _: None) -> web.Response:
    team = await _readable_team(request)
    try:
        statuses = await budget_usage(request.app[BUDGETS], request.app[LEDGER], team)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    payload = {"object": "list", "team": team, "data": [status_dict(s) for s in statuses]}
    return json_response(payload, headers={"Cache-Control": "no-store"})


async def scorecard(request: web.Request, _: None) -> web.Response:
    team = await _readable_team(request)
    document = (await scorecard_of(request, asked_month(request))).document
    cards = [card for card in document["teams"] if card["team"] == team]
    if not cards:
        raise NotFound(
            f"team {team!r} is shared: its spend is allocated to the other teams in chargeback, "
            "so it has no scorecard of its own",
            param="team",
            code="scorecard_not_found",
        )
    payload = {
        "object": "spendgate.scorecard",
        **{k: document[k] for k in _SCORECARD_FIELDS},
        **cards[0],
    }
    return json_response(payload, headers={"Cache-Control": "no-store"})


async def _readable_team(request: web.Request) -> str:
    team = team_in_view(request, request.query.get("team") or None)
    config = request.app[LIVE_CONFIG].current
    try:
        teams = await known_teams(request.app[REDIS], config.teams)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    if team not in teams:
        raise NotFound(
            f"unknown team {team!r}: neither in the config nor in the ledger",
            param="team",
            code="team_not_found",
        )
    return team


async def _forecast(request: web.Request, team: str) -> dict[str, Any]:
    report = await forecast_of(request, team, days=1)
    [entry] = report.document["teams"]
    return {"as_of": report.document["as_of"], **{k: entry[k] for k in _FORECAST_FIELDS}}


_TEAM = Param(
    "team",
    "The team to read. A team's own key may leave it out (another team is a 403 "
    "`team_forbidden`); the admin and reporting keys must name it.",
)
_DAY: JsonSchema = {"type": "string", "format": "date"}
_USD: JsonSchema = {"type": "string", "description": "exact USD"}
_FIGURES: JsonSchema = {
    "type": "object",
    "description": "Showback figures (see docs/ledger.md): cost, list cost, savings, tokens, "
    "requests, cost per request and per 1k tokens, revenue and margin.",
    "required": ["cost_usd", "list_cost_usd", "savings_usd", "requests", "tokens"],
    "properties": {
        "cost_usd": _USD,
        "list_cost_usd": _USD,
        "savings_usd": _USD,
        "requests": {"type": "integer"},
        "tokens": {"type": "integer"},
    },
}
_BUDGET_LIST: JsonSchema = {"type": "array", "items": {"$ref": "#/components/schemas/Budget"}}
_USAGE: JsonSchema = {
    "type": "object",
    "required": [
        *("object", "team", "generated_at", "start", "end", "currency", "days", "cost_usd"),
        *("projects", "tags", "models", "daily_usd", "keys", "budgets", "forecast"),
    ],
    "properties": {
        "object": {"const": "spendgate.usage"},
        "team": {"type": "string"},
        "generated_at": {"type": "string", "format": "date-time"},
        "start": _DAY,
        "end": _DAY,
        "currency": {"const": "USD"},
        "days": {"type": "array", "items": _DAY},
        "projects": {"type": "object", "additionalProperties": _FIGURES},
        "tags": {"type": "object", "additionalProperties": _FIGURES},
        "models": {"type": "object", "additionalProperties": _FIGURES},
        "daily_usd": {"type": "array", "items": _USD, "description": "one per day of `days`"},
        "keys": {
            "type": "array",
            "description": "every key with spend in the period, dearest first",
            "items": {
                "type": "object",
                "required": ["key_id", "cost_usd", "requests"],
                "properties": {
                    "key_id": {"type": "string"},
                    "cost_usd": _USD,
                    "requests": {"type": "integer"},
                },
            },
        },
        "budgets": _BUDGET_LIST,
        "forecast": {
            "type": ["object", "null"],
            "description": "The team's entry of the forecast report (GET /admin/forecast): the "
            "month's expected total and each budget's outlook, with the model and its backtested "
            "accuracy; null figures while the history is too short to forecast; null with "
            "forecast=false.",
            "required": ["as_of", *_FORECAST_FIELDS],
        },
    },
}
_SCORECARD: JsonSchema = {
    "type": "object",
    "description": "The team's card of the scorecard report (GET /admin/reports/scorecard): "
    "budget adherence, allocation, optimization score, unit costs, month-over-month change "
    "and its drivers, the month's forecast against its actual, anomalies. See "
    "docs/scorecards.md.",
    "required": ["object", "team", *_SCORECARD_FIELDS, "cost_usd", "budgets"],
    "properties": {
        "object": {"const": "spendgate.scorecard"},
        "team": {"type": "string"},
        "period": {"type": "string", "pattern": r"^\d{4}-\d{2}$"},
        "start": _DAY,
        "end": _DAY,
        "currency": {"const": "USD"},
        "cost_usd": _USD,
        "budgets": {"type": "array", "items": {"type": "object"}},
    },
}
_BUDGETS: JsonSchema = {
    "type": "object",
    "required": ["object", "team", "data"],
    "properties": {"object": {"const": "list"}, "team": {"type": "string"}, "data": _BUDGET_LIST},
}


def team_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "GET",
            USAGE_PATH,
            usage,
            "A team's spend: by project, tag, model, key and day; its budgets and forecast",
            "team",
            (Reply(200, "The team's spend in the period, with its budgets and forecast.", _USAGE),),
            description="Days are UTC; give both start and end, or neither (the current month "
            "so far). The figures equal the showback report's for the team.",
            query=(
                _TEAM,
                Param("start", "First day (YYYY-MM-DD).", _DAY),
                Param("end", "Last day, inclusive (YYYY-MM-DD).", _DAY),
                Param(
                    "forecast",
                    "Include the forecast (default: true; false answers faster, forecast null).",
                    {"type": "boolean", "default": True},
                ),
            ),
            errors=(404, 503),
            access="team",
        ),
        Endpoint(
            "GET",
            BUDGETS_PATH,
            budgets,
            "A team's budgets with their current period",
            "team",
            (Reply(200, "The team's budgets: spent, reserved, remaining, period end.", _BUDGETS),),
            query=(_TEAM,),
            errors=(404, 503),
            access="team",
        ),
        Endpoint(
            "GET",
            SCORECARD_PATH,
            scorecard,
            "A team's scorecard of a month",
            "team",
            (Reply(200, "The team's scorecard, as the scorecard report has it.", _SCORECARD),),
            description="A shared team has no scorecard (404 `scorecard_not_found`).",
            query=(_TEAM, MONTH_PARAM),
            errors=(404, 503),
            access="team",
        ),
    )
