"""The admin API for budgets: every budget in force with its current period, and budgets made
through the API (create, replace, delete; config budgets change only with the YAML).

A budget body is a `budgets.rules[]` entry of the YAML, checked by the same code (schema and
cross-references against the running config). Amounts are exact: USD as decimal strings, with
integer nano-USD alongside, never floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from redis.exceptions import RedisError

from gateway.app.admin import Endpoint, Param, Reply, json_response
from gateway.app.state import BUDGETS, LEDGER, LIVE_CONFIG
from gateway.budgets.registry import BudgetExists, DeclaredInConfig
from gateway.budgets.usage import budget_usage, status_dict
from gateway.config.checks import JsonSchema
from gateway.config.model import BudgetConfig
from gateway.config.schema import BudgetRuleSpec
from gateway.config.spend import admin_budget
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable


async def list_budgets(request: web.Request, _: None) -> web.Response:
    team = request.query.get("team") or None
    with _store_errors():
        statuses = await budget_usage(request.app[BUDGETS], request.app[LEDGER], team)
    return json_response({"object": "list", "data": [status_dict(s) for s in statuses]})


async def create_budget(request: web.Request, body: BudgetRuleSpec) -> web.Response:
    budget = _compiled(request, body)
    with _store_errors():
        try:
            budget = await request.app[BUDGETS].create(budget)
        except BudgetExists as exc:
            raise InvalidRequest(str(exc), param="name", code="budget_exists") from exc
        (status,) = await request.app[LEDGER].budget_status(budget.team, [budget])
    return json_response(status_dict(status), status=201)


async def put_budget(request: web.Request, body: BudgetRuleSpec) -> web.Response:
    budget = _compiled(request, body)
    with _store_errors():
        try:
            created = await request.app[BUDGETS].put(budget)
        except DeclaredInConfig as exc:
            raise _declared_in_config(exc) from exc
        (status,) = await request.app[LEDGER].budget_status(budget.team, [budget])
    return json_response(status_dict(status), status=201 if created else 200)


async def delete_budget(request: web.Request, _: None) -> web.Response:
    name = request.match_info["name"]
    with _store_errors():
        try:
            deleted = await request.app[BUDGETS].delete(name)
        except DeclaredInConfig as exc:
            raise _declared_in_config(exc) from exc
    if not deleted:
        raise NotFound(f"no admin budget named {name!r}", param="name", code="budget_not_found")
    return json_response({"name": name, "deleted": True})


def _compiled(request: web.Request, body: BudgetRuleSpec) -> BudgetConfig:
    budget, problems = admin_budget(body, request.app[LIVE_CONFIG].current)
    if budget is None:
        raise InvalidRequest.from_problems(problems)
    return budget


def _declared_in_config(exc: DeclaredInConfig) -> InvalidRequest:
    return InvalidRequest(str(exc), param="name", code="budget_declared_in_config")


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the budget store is unreachable; try again shortly") from exc


def _nullable(schema: JsonSchema) -> JsonSchema:
    return {**schema, "type": [schema["type"], "null"]}


_USD: JsonSchema = {"type": "string", "pattern": r"^-?\d+\.\d+$", "description": "exact USD"}
_NANO: JsonSchema = {"type": "integer", "description": "nano-USD (1 USD = 10^9)"}
_TOKENS: JsonSchema = {"type": "integer"}
_BUDGET_FIELDS = [
    "name",
    "team",
    "scope",
    "match",
    "period",
    "on_exceed",
    "downgrade_to",
    "thresholds",
    "source",
    "limit_usd",
    "limit_nano",
    "limit_tokens",
    "period_id",
    "period_end",
    "spent_usd",
    "spent_nano",
    "reserved_usd",
    "reserved_nano",
    "remaining_usd",
    "remaining_nano",
    "spent_tokens",
    "reserved_tokens",
    "remaining_tokens",
    "pct",
]
BUDGET_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "A budget and its current period. remaining = limit - spent - reserved "
    "(negative when an alert budget is overspent).",
    "required": [*_BUDGET_FIELDS],
    "properties": {
        "name": {"type": "string"},
        "team": {"type": "string"},
        "scope": {"enum": ["team", "key", "project", "tag"]},
        "match": {"type": ["string", "null"]},
        "period": {"enum": ["daily", "weekly", "monthly", "total"]},
        "on_exceed": {"enum": ["block", "downgrade", "alert"]},
        "downgrade_to": {"type": ["string", "null"]},
        "thresholds": {"type": "array", "items": {"type": "integer"}},
        "source": {"enum": ["config", "admin"]},
        "limit_usd": _nullable(_USD),
        "limit_nano": _nullable(_NANO),
        "limit_tokens": _nullable(_TOKENS),
        "period_id": {
            "type": "string",
            "description": "d20261126, w2026W48 (ISO week), m202611 or total",
        },
        "period_end": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when the period ends (UTC); null for total",
        },
        "spent_usd": _USD,
        "spent_nano": _NANO,
        "reserved_usd": {**_USD, "description": "held by requests in flight"},
        "reserved_nano": _NANO,
        "remaining_usd": _nullable(_USD),
        "remaining_nano": _nullable(_NANO),
        "spent_tokens": _TOKENS,
        "reserved_tokens": _TOKENS,
        "remaining_tokens": _nullable(_TOKENS),
        "pct": {"type": "number", "description": "spent as a percent of the limit (the higher)"},
    },
}
_BUDGET_REF: JsonSchema = {"$ref": "#/components/schemas/Budget"}
_LIST: JsonSchema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _BUDGET_REF}},
}
_DELETED: JsonSchema = {
    "type": "object",
    "required": ["name", "deleted"],
    "properties": {"name": {"type": "string"}, "deleted": {"const": True}},
}
_NAME = Param("name", "The budget's name.")
_BODY_RULES = (
    "The body is a `budgets.rules[]` entry of the config file, checked by the same code; "
    "`scope` defaults to `team`, `on_exceed` to `block`, `thresholds` to the config's "
    "`budgets.thresholds`. A key budget's `match` may name a key declared in the team's config."
)


def budget_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "GET",
            "/admin/budgets",
            list_budgets,
            "List budgets with their current period",
            "budgets",
            (Reply(200, "Every budget in force: config first, then admin.", _LIST),),
            query=(Param("team", "Only this team's budgets."),),
            errors=(503,),
            access="reporting",
        ),
        Endpoint(
            "POST",
            "/admin/budgets",
            create_budget,
            "Create a budget",
            "budgets",
            (Reply(201, "The new budget, in force at once.", _BUDGET_REF),),
            description=f"{_BODY_RULES} A name in use is refused (400 `budget_exists`).",
            body=BudgetRuleSpec,
            errors=(503,),
        ),
        Endpoint(
            "PUT",
            "/admin/budgets/{name}",
            put_budget,
            "Create or replace a budget",
            "budgets",
            (
                Reply(201, "Created.", _BUDGET_REF),
                Reply(200, "Replaced; spend so far in the period still counts.", _BUDGET_REF),
            ),
            description=f"{_BODY_RULES} The body's `name` may be left out (the path's is "
            "used). A config budget cannot be replaced (400 `budget_declared_in_config`).",
            body=BudgetRuleSpec,
            path_params=(_NAME,),
            fill_from_path=("name",),
            errors=(503,),
        ),
        Endpoint(
            "DELETE",
            "/admin/budgets/{name}",
            delete_budget,
            "Delete an admin budget",
            "budgets",
            (Reply(200, "Deleted; its counters expire with their period.", _DELETED),),
            description="Config budgets are refused (400 `budget_declared_in_config`).",
            path_params=(_NAME,),
            errors=(404, 503),
        ),
    )


def admin_budget_routes() -> list[web.RouteDef]:
    return [endpoint.route() for endpoint in budget_endpoints()]
