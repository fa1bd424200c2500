"""The admin HTTP API for budgets: list every budget with its current period, create and delete
budgets made through the API (config budgets change only with the YAML).

Amounts are exact: USD as decimal strings (and integer nano-USD alongside), never floats. Same
auth and strict validation as the keys API (`gateway.app.admin`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from aiohttp import web
from redis.exceptions import RedisError

from gateway.app.admin import _json, _json_object, authorize
from gateway.app.state import BUDGETS, LEDGER, LIVE_CONFIG
from gateway.budgets.definitions import ON_EXCEED, PERIODS, SCOPES
from gateway.budgets.ledger import MAX_EXACT, BudgetStatus
from gateway.budgets.messages import format_usd
from gateway.budgets.registry import BudgetExists
from gateway.config.model import BudgetConfig, BudgetScope, Config, OnExceed, Period
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.types import NANO_PER_USD

_FIELDS = frozenset(
    {
        "name",
        "team",
        "scope",
        "match",
        "period",
        "limit_usd",
        "limit_tokens",
        "on_exceed",
        "downgrade_to",
        "thresholds",
    }
)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_KEY_ID = re.compile(r"key_[0-9a-f]{12}")
_MAX_MATCH = 200
_MAX_THRESHOLD = 1000
_DEFAULT_THRESHOLDS = (50, 75, 90, 100)


def admin_budget_routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/budgets", list_budgets),
        web.post("/admin/budgets", create_budget),
        web.delete("/admin/budgets/{name}", delete_budget),
    ]


async def list_budgets(request: web.Request) -> web.Response:
    authorize(request)
    unknown = sorted(set(request.query) - {"team"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
    team = request.query.get("team") or None
    registry, ledger = request.app[BUDGETS], request.app[LEDGER]
    with _store_errors():
        await registry.refresh()  # see what other replicas' admins created
        budgets = registry.all(team)
        by_team: dict[str, list[BudgetConfig]] = {}
        for budget in budgets:
            by_team.setdefault(budget.team, []).append(budget)
        statuses = {}
        for name, rules in by_team.items():
            await ledger.release_expired(name)  # so "reserved" excludes crashed replicas' holds
            statuses.update({s.budget.name: s for s in await ledger.budget_status(name, rules)})
    data = [_render(statuses[b.name]) for b in budgets]
    return _json({"object": "list", "data": data})


async def create_budget(request: web.Request) -> web.Response:
    authorize(request)
    body = await _json_object(request)
    budget = _parse_budget(body, request.app[LIVE_CONFIG].current)
    with _store_errors():
        try:
            budget = await request.app[BUDGETS].create(budget)
        except BudgetExists as exc:
            raise InvalidRequest(str(exc), param="name", code="budget_exists") from exc
        (status,) = await request.app[LEDGER].budget_status(budget.team, [budget])
    return _json(_render(status), status=201)


async def delete_budget(request: web.Request) -> web.Response:
    authorize(request)
    name = request.match_info["name"]
    registry = request.app[BUDGETS]
    existing = registry.get(name)
    if existing is not None and existing.source == "config":
        raise InvalidRequest(
            f"budget {name!r} is declared in the config file: remove it from the YAML "
            "`budgets:` section and reload",
            param="name",
            code="budget_declared_in_config",
        )
    with _store_errors():
        deleted = await registry.delete(name)
    if not deleted:
        raise NotFound(f"no admin budget named {name!r}", param="name", code="budget_not_found")
    return _json({"name": name, "deleted": True})


def _render(status: BudgetStatus) -> dict[str, Any]:
    b = status.budget
    remaining_nano, remaining_tokens = status.remaining_nano, status.remaining_tokens
    return {
        "name": b.name,
        "team": b.team,
        "scope": b.scope,
        "match": b.match,
        "period": b.period,
        "on_exceed": b.on_exceed,
        "downgrade_to": b.downgrade_to,
        "thresholds": list(b.thresholds),
        "source": b.source,
        "limit_usd": _usd(b.limit_nano),
        "limit_nano": b.limit_nano,
        "limit_tokens": b.limit_tokens,
        "period_id": status.period_id,
        "period_end": (
            None if status.period_end is None else f"{status.period_end:%Y-%m-%dT%H:%M:%SZ}"
        ),
        "spent_usd": format_usd(status.spent_nano),
        "spent_nano": status.spent_nano,
        "reserved_usd": format_usd(status.reserved_nano),
        "reserved_nano": status.reserved_nano,
        "remaining_usd": _usd(remaining_nano),
        "remaining_nano": remaining_nano,
        "spent_tokens": status.spent_tokens,
        "reserved_tokens": status.reserved_tokens,
        "remaining_tokens": remaining_tokens,
        "pct": round(status.pct, 2),
    }


def _usd(nano: int | None) -> str | None:
    return None if nano is None else format_usd(nano)


def _parse_budget(body: Mapping[str, object], config: Config) -> BudgetConfig:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_FIELDS))
        raise InvalidRequest(f"unknown field '{unknown[0]}' (allowed: {allowed})", param=unknown[0])
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(
            "'name' is required: 1 to 100 characters of A-Z a-z 0-9 _ . -", param="name"
        )
    team = body.get("team")
    if not isinstance(team, str) or not team:
        raise InvalidRequest("'team' is required and must be a non-empty string", param="team")
    if team not in config.teams:
        known = ", ".join(sorted(config.teams)) or "none"
        raise InvalidRequest(
            f"unknown team {team!r}: teams in the config are {known}",
            param="team",
            code="unknown_team",
        )
    scope = cast(BudgetScope, _choice(body, "scope", SCOPES, None))
    period = cast(Period, _choice(body, "period", PERIODS, None))
    on_exceed = cast(OnExceed, _choice(body, "on_exceed", ON_EXCEED, "block"))
    limit_nano = _limit_usd(body.get("limit_usd"))
    limit_tokens = _limit_tokens(body.get("limit_tokens"))
    if limit_nano is None and limit_tokens is None:
        raise InvalidRequest("set 'limit_usd', 'limit_tokens' or both", param="limit_usd")
    return BudgetConfig(
        name=name,
        team=team,
        scope=scope,
        match=_match(scope, body.get("match")),
        period=period,
        limit_nano=limit_nano,
        limit_tokens=limit_tokens,
        on_exceed=on_exceed,
        downgrade_to=_downgrade_to(on_exceed, body.get("downgrade_to"), config),
        thresholds=_thresholds(body.get("thresholds", list(_DEFAULT_THRESHOLDS))),
        source="admin",
    )


def _choice(
    body: Mapping[str, object], name: str, allowed: frozenset[str], default: str | None
) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(sorted(allowed))
        required = "is required and " if default is None else ""
        raise InvalidRequest(f"'{name}' {required}must be one of {choices}", param=name)
    return value


def _match(scope: str, value: object) -> str | None:
    if scope == "team":
        if value is not None:
            raise InvalidRequest("'match' must be absent for scope team", param="match")
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_MATCH:
        raise InvalidRequest(
            f"'match' is required for scope {scope}: a string of at most {_MAX_MATCH} characters",
            param="match",
        )
    if scope == "key" and not _KEY_ID.fullmatch(value):
        raise InvalidRequest("'match' must be a key id (key_ + 12 hex digits)", param="match")
    if scope == "tag":
        tag, sep, _ = value.partition("=")
        if not sep or not tag:
            raise InvalidRequest("'match' must be 'name=value' for scope tag", param="match")
    return value


def _limit_usd(value: object) -> int | None:
    if value is None:
        return None
    problem = "'limit_usd' must be a non-negative decimal (string or number) of USD"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(problem, param="limit_usd")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidRequest(problem, param="limit_usd") from exc
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(problem, param="limit_usd")
    nano = amount * NANO_PER_USD
    if nano != nano.to_integral_value():
        raise InvalidRequest(
            "'limit_usd' is finer than a nano-dollar (9 decimals)", param="limit_usd"
        )
    if nano >= MAX_EXACT:
        raise InvalidRequest(
            f"'limit_usd' must be below {format_usd(MAX_EXACT)} USD", param="limit_usd"
        )
    return int(nano)


def _limit_tokens(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_EXACT:
        raise InvalidRequest("'limit_tokens' must be a non-negative integer", param="limit_tokens")
    return value


def _downgrade_to(on_exceed: str, value: object, config: Config) -> str | None:
    if on_exceed != "downgrade":
        if value is not None:
            raise InvalidRequest(
                "'downgrade_to' is only for on_exceed: downgrade", param="downgrade_to"
            )
        return None
    if not isinstance(value, str) or value not in config.models:
        known = ", ".join(sorted(config.models)) or "none"
        raise InvalidRequest(
            f"'downgrade_to' must name a configured model ({known})", param="downgrade_to"
        )
    return value


def _thresholds(value: object) -> tuple[int, ...]:
    problem = f"'thresholds' must be a list of distinct integer percents from 1 to {_MAX_THRESHOLD}"
    if not isinstance(value, list) or len(value) > 20:
        raise InvalidRequest(problem, param="thresholds")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= _MAX_THRESHOLD:
            raise InvalidRequest(problem, param="thresholds")
    if len(set(value)) != len(value):
        raise InvalidRequest(problem, param="thresholds")
    return tuple(sorted(value))


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the budget store is unreachable; try again shortly") from exc
