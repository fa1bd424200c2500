"""A budget definition as plain JSON-ready data: how admin-made budgets are stored in Redis and
how spooled settles remember the budgets they were reserved against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast, get_args

from gateway.config.model import BudgetConfig, BudgetScope, OnExceed, Period

SCOPES: frozenset[str] = frozenset(get_args(BudgetScope))
PERIODS: frozenset[str] = frozenset(get_args(Period))
ON_EXCEED: frozenset[str] = frozenset(get_args(OnExceed))


def budget_to_dict(budget: BudgetConfig) -> dict[str, Any]:
    return {
        "name": budget.name,
        "team": budget.team,
        "scope": budget.scope,
        "match": budget.match,
        "period": budget.period,
        "limit_nano": budget.limit_nano,
        "limit_tokens": budget.limit_tokens,
        "on_exceed": budget.on_exceed,
        "downgrade_to": budget.downgrade_to,
        "thresholds": list(budget.thresholds),
        "source": budget.source,
    }


def budget_from_dict(data: Mapping[str, Any]) -> BudgetConfig:
    """The inverse of `budget_to_dict`; ValueError when `data` is not a budget definition."""
    try:
        scope, period, on_exceed = data["scope"], data["period"], data.get("on_exceed", "block")
        if scope not in SCOPES or period not in PERIODS or on_exceed not in ON_EXCEED:
            raise ValueError(
                f"bad scope, period or on_exceed: {scope!r}, {period!r}, {on_exceed!r}"
            )
        source = data.get("source", "admin")
        if source not in ("config", "admin"):
            raise ValueError(f"bad source {source!r}")
        return BudgetConfig(
            name=_text(data["name"]),
            team=_text(data["team"]),
            scope=cast(BudgetScope, scope),
            match=_optional_text(data.get("match")),
            period=cast(Period, period),
            limit_nano=_optional_int(data.get("limit_nano")),
            limit_tokens=_optional_int(data.get("limit_tokens")),
            on_exceed=cast(OnExceed, on_exceed),
            downgrade_to=_optional_text(data.get("downgrade_to")),
            thresholds=tuple(_int(t) for t in data.get("thresholds", (50, 75, 90, 100))),
            source=source,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a budget definition: {exc!r}") from exc


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)
