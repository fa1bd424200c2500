"""The admin API for FinOps: reports under /admin/reports/ and external costs at /admin/costs.

    GET  /admin/reports/showback?start=YYYY-MM-DD&end=YYYY-MM-DD&format=json|csv|table
         (default: the current month so far)
    GET  /admin/reports/chargeback?period=YYYY-MM&format=json|csv|table  (default: this month)
    GET  /admin/reports/focus?period=YYYY-MM&format=csv|json              (FOCUS 1.x rows)
    POST /admin/costs  {"id", "team", "amount_usd", "description", "project"?, "environment"?,
                        "workload"?, "provider"?, "tags"?, "ts"?}

Same admin key and strict validation as the keys API. A POST is idempotent by `id` (per team):
a retry answers 200 with `"duplicate": true` and adds nothing; the first post answers 201.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import get_args

import orjson
from aiohttp import web

from gateway import rediskeys
from gateway.app.admin import _json_object, _optional_text, _tags, authorize
from gateway.app.state import CLOCK, LIVE_CONFIG, REDIS
from gateway.errors import InvalidRequest
from gateway.reports.build import Period, ReportKind, build_report
from gateway.reports.external_costs import ExternalCost, IdempotencyConflict, post_external_cost
from gateway.reports.render import CONTENT_TYPES, Format, render
from gateway.types import nano_to_usd_str, usd_to_nano

_COST_FIELDS = frozenset(
    {
        "id",
        "team",
        "amount_usd",
        "description",
        "project",
        "environment",
        "workload",
        "provider",
        "tags",
        "ts",
    }
)
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_DESCRIPTION = 500
_MAX_AMOUNT_USD = Decimal(10) ** 9
_FUTURE_SLACK_S = 86_400  # a cost may be dated at most a day ahead (clock skew, time zones)


def admin_report_routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/reports/showback", showback_report),
        web.get("/admin/reports/chargeback", chargeback_report),
        web.get("/admin/reports/focus", focus_report),
        web.post("/admin/costs", post_cost),
    ]


async def showback_report(request: web.Request) -> web.Response:
    authorize(request)
    query = _query(request, {"start", "end", "format"})
    if "start" in query or "end" in query:
        if "start" not in query or "end" not in query:
            raise InvalidRequest("give both 'start' and 'end' (YYYY-MM-DD)", param="start")
        period = _invalid(lambda: Period.of_days(query["start"], query["end"]), "start")
    else:
        period = Period.month_to_date(_now(request))
    return await _report(request, "showback", period, _format(query, "json"))


async def chargeback_report(request: web.Request) -> web.Response:
    authorize(request)
    query = _query(request, {"period", "format"})
    return await _report(request, "chargeback", _month(request, query), _format(query, "json"))


async def focus_report(request: web.Request) -> web.Response:
    authorize(request)
    query = _query(request, {"period", "format"})
    return await _report(request, "focus", _month(request, query), _format(query, "csv"))


async def post_cost(request: web.Request) -> web.Response:
    authorize(request)
    body = await _json_object(request)
    now = request.app[CLOCK]()
    cost = _external_cost(body, request.app[LIVE_CONFIG].current.teams, now)
    try:
        posted = await post_external_cost(request.app[REDIS], cost, int(now * 1000))
    except IdempotencyConflict as exc:
        raise InvalidRequest(str(exc), param="id", code="idempotency_key_reused") from None
    event = posted.event
    payload = {
        "id": cost.id,
        "event_id": event.event_id,
        "team": event.team,
        "amount_usd": nano_to_usd_str(event.cost_nano),
        "ts": datetime.fromtimestamp(event.ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
        "duplicate": posted.duplicate,
    }
    return web.Response(
        status=200 if posted.duplicate else 201,
        body=orjson.dumps(payload),
        content_type="application/json",
    )


async def _report(
    request: web.Request, kind: ReportKind, period: Period, fmt: Format
) -> web.Response:
    config = request.app[LIVE_CONFIG].current
    report = await build_report(kind, config, request.app[REDIS], period)
    headers = {}
    if fmt == "csv":
        name = f"spendgate-{kind}-{period.label.replace('..', '_')}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return web.Response(
        text=render(report, fmt),
        content_type=CONTENT_TYPES[fmt],
        charset="utf-8",
        headers=headers,
    )


def _query(request: web.Request, allowed: set[str]) -> Mapping[str, str]:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
    return request.query


def _format(query: Mapping[str, str], default: Format) -> Format:
    value = query.get("format", default)
    if value not in get_args(Format):
        raise InvalidRequest("'format' must be one of json, csv, table", param="format")
    return value  # type: ignore[return-value]  # checked against the Literal just above


def _now(request: web.Request) -> datetime:
    return datetime.fromtimestamp(request.app[CLOCK](), UTC)


def _month(request: web.Request, query: Mapping[str, str]) -> Period:
    if "period" not in query:
        return Period.current_month(_now(request))
    return _invalid(lambda: Period.of_month(query["period"]), "period")


def _invalid(build: Callable[[], Period], param: str) -> Period:
    try:
        return build()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from None


def _external_cost(
    body: Mapping[str, object], teams: Mapping[str, object], now: float
) -> ExternalCost:
    unknown = sorted(set(body) - _COST_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_COST_FIELDS))
        raise InvalidRequest(f"unknown field '{unknown[0]}' (allowed: {allowed})", param=unknown[0])
    cost_id = body.get("id")
    if not isinstance(cost_id, str) or not _ID.fullmatch(cost_id):
        raise InvalidRequest(
            "'id' is required: an idempotency id of 1-128 letters, digits or _ . : -", param="id"
        )
    team = body.get("team")
    if not isinstance(team, str) or team not in teams:
        raise InvalidRequest("'team' is required and must name a configured team", param="team")
    description = body.get("description")
    if not isinstance(description, str) or not description.strip():
        raise InvalidRequest("'description' is required (what the cost is)", param="description")
    if len(description) > _MAX_DESCRIPTION:
        raise InvalidRequest(
            f"'description' is longer than {_MAX_DESCRIPTION} characters", param="description"
        )
    return ExternalCost(
        id=cost_id,
        team=team,
        amount_nano=_amount(body.get("amount_usd")),
        description=description,
        ts_ms=_timestamp(body.get("ts"), now),
        project=_optional_text(body, "project"),
        environment=_optional_text(body, "environment"),
        workload=_optional_text(body, "workload"),
        provider=_optional_text(body, "provider"),
        tags=_tags(body.get("tags")) or {},
    )


def _amount(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(
            "'amount_usd' is required: a decimal string (\"12.50\") or number", param="amount_usd"
        )
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequest(
            f"'amount_usd' {value!r} is not a number", param="amount_usd"
        ) from None
    if not amount.is_finite() or amount <= 0 or amount > _MAX_AMOUNT_USD:
        raise InvalidRequest(
            f"'amount_usd' must be positive and at most {_MAX_AMOUNT_USD}", param="amount_usd"
        )
    nano = usd_to_nano(str(amount))
    if nano <= 0:
        raise InvalidRequest("'amount_usd' is below one nano-dollar", param="amount_usd")
    return nano


def _timestamp(value: object, now: float) -> int | None:
    """Epoch ms of `ts`: ISO 8601 (UTC when no offset is given) or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"'ts' {value!r} is not an ISO 8601 time", param="ts") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidRequest("'ts' must be an ISO 8601 string or epoch seconds", param="ts")
    # Older than the daily rollups are kept, it would never show in a report.
    if not now - rediskeys.ROLLUP_DAILY_TTL_S < seconds < now + _FUTURE_SLACK_S:
        raise InvalidRequest(
            "'ts' must lie within the last 400 days and at most a day ahead", param="ts"
        )
    return int(seconds * 1000)
