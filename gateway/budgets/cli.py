"""`spendgate budgets list|usage|set|delete`: budgets from a shell.

`set` takes what a `budgets.rules[]` entry of the YAML takes, checked by the same code as the
config and the admin API. As `spendgate keys`: with the local store or a Redis the command uses
the store itself; with an in-process one (memory://), or whenever --url is given, it goes
through a running gateway's admin API (`gateway.clikit`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from gateway.clikit import (
    AdminClient,
    CliError,
    JsonObject,
    SharedStore,
    admin_parent,
    connect,
    print_json,
    run_command,
    table,
)

if TYPE_CHECKING:
    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

Clock = Callable[[], float]

_HTTP_TIMEOUT_S = 15.0
_LIST_COLUMNS: tuple[str, ...] = ("name", "team", "scope", "match", "period", "limit_usd")
_LIST_COLUMNS += ("limit_tokens", "on_exceed", "downgrade_to", "source")
_USAGE_COLUMNS: tuple[str, ...] = ("name", "team", "period", "unit", "limit", "spent")
_USAGE_COLUMNS += ("reserved", "remaining", "used", "period_end")
_PERIODS = ("daily", "weekly", "monthly", "total")
_SCOPES = ("team", "key", "project", "tag")
_ON_EXCEED = ("block", "downgrade", "alert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = admin_parent()

    sub = parser.add_subparsers(
        dest="budgets_command", required=True, metavar="{list,usage,set,delete}"
    )
    listing = sub.add_parser("list", parents=[common], help="list budgets (config and admin)")
    listing.add_argument("--team", help="only this team's budgets")
    usage = sub.add_parser(
        "usage",
        parents=[common],
        help="spent, reserved and remaining per budget in its current period",
    )
    usage.add_argument("--team", help="only this team's budgets")

    put = sub.add_parser(
        "set",
        parents=[common],
        help="create or replace an admin budget (the keys of a budgets.rules[] entry)",
    )
    put.add_argument("name", metavar="NAME", help="the budget's name (A-Z a-z 0-9 _ . -)")
    put.add_argument("--team", required=True, help="the team it limits")
    put.add_argument("--period", required=True, choices=_PERIODS, help="calendar period (UTC)")
    put.add_argument("--limit-usd", metavar="USD", help="spend limit per period, e.g. 250.00")
    put.add_argument("--limit-tokens", type=int, metavar="N", help="token limit per period")
    put.add_argument(
        "--scope", choices=_SCOPES, help="what it limits within the team (default: team)"
    )
    put.add_argument(
        "--match",
        help="for scope key: a key id or config key name; project: a project; tag: key=value",
    )
    put.add_argument(
        "--on-exceed", choices=_ON_EXCEED, help="what happens over the limit (default: block)"
    )
    put.add_argument("--downgrade-to", metavar="MODEL", help="the model for --on-exceed downgrade")
    put.add_argument(
        "--thresholds",
        type=_percents,
        metavar="P,P,...",
        help="alert thresholds in percent, increasing, e.g. 50,80,100 ('' for none; default: "
        "budgets.thresholds of the config)",
    )

    delete = sub.add_parser("delete", parents=[common], help="delete an admin budget")
    delete.add_argument("name", metavar="NAME", help="the budget's name")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, *, clock: Clock = time.time) -> int:
    """`clock` dates the current period when the command reads the store itself."""
    return await run_command("budgets", _run(args, clock))


async def _run(args: argparse.Namespace, clock: Clock) -> int:
    async with _open_backend(args, clock) as backend:
        return await _COMMANDS[args.budgets_command](backend, args)


class _Backend(Protocol):
    async def usage(self, team: str | None) -> list[JsonObject]: ...
    async def put(self, name: str, body: JsonObject) -> tuple[bool, JsonObject]: ...
    async def delete(self, name: str) -> bool: ...


async def _list(backend: _Backend, args: argparse.Namespace) -> int:
    budgets = await backend.usage(args.team)
    if args.as_json:
        print_json({"data": budgets})
    else:
        rows = [tuple(_cell(b.get(c)) for c in _LIST_COLUMNS) for b in budgets]
        print(table(_LIST_COLUMNS, rows, empty="(no budgets)"))
    return 0


async def _usage(backend: _Backend, args: argparse.Namespace) -> int:
    budgets = await backend.usage(args.team)
    if args.as_json:
        print_json({"data": budgets})
    else:
        rows = [row for b in budgets for row in _usage_rows(b)]
        print(table(_USAGE_COLUMNS, rows, empty="(no budgets)"))
    return 0


async def _set(backend: _Backend, args: argparse.Namespace) -> int:
    body: JsonObject = {
        "name": args.name,
        "team": args.team,
        "period": args.period,
        "limit_usd": args.limit_usd,
        "limit_tokens": args.limit_tokens,
        "scope": args.scope,
        "match": args.match,
        "on_exceed": args.on_exceed,
        "downgrade_to": args.downgrade_to,
        "thresholds": args.thresholds,
    }
    created, budget = await backend.put(args.name, {k: v for k, v in body.items() if v is not None})
    if args.as_json:
        print_json(budget)
    else:
        print(f"{'created' if created else 'replaced'} budget {args.name}")
        print(table(_USAGE_COLUMNS, _usage_rows(budget), empty="(no limit)"))
    return 0


async def _delete(backend: _Backend, args: argparse.Namespace) -> int:
    if not await backend.delete(args.name):
        raise CliError(f"no admin budget named {args.name!r}")
    if args.as_json:
        print_json({"name": args.name, "deleted": True})
    else:
        print(f"deleted budget {args.name}")
    return 0


_COMMANDS = {"list": _list, "usage": _usage, "set": _set, "delete": _delete}


def _usage_rows(budget: Mapping[str, object]) -> list[tuple[str, ...]]:
    """One row per limit the budget has: USD, tokens, or both."""
    head = (_cell(budget.get("name")), _cell(budget.get("team")), _cell(budget.get("period_id")))
    end = budget.get("period_end") or "never"
    rows = []
    for unit, suffix in (("usd", "_usd"), ("tokens", "_tokens")):
        limit = budget.get(f"limit{suffix}")
        if limit is None:
            continue
        figures = [budget.get(f"{what}{suffix}") for what in ("spent", "reserved", "remaining")]
        cells = (_cell(limit), *(_cell(f) for f in figures), _used(figures[0], limit))
        rows.append((*head, unit, *cells, str(end)))
    return rows


def _used(spent: object, limit: object) -> str:
    try:
        limit_value = float(str(limit))
        return f"{100 * float(str(spent)) / limit_value:.1f}%" if limit_value else "-"
    except ValueError:
        return "-"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _percents(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected percents like 50,80,100, got {text!r}"
        ) from None


@asynccontextmanager
async def _open_backend(args: argparse.Namespace, clock: Clock) -> AsyncIterator[_Backend]:
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.budgets.ledger import BudgetLedger
            from gateway.budgets.registry import BudgetRegistry
            from gateway.store.connect import connected

            config = target.config
            async with connected(config.store) as redis:
                registry = BudgetRegistry(redis, config.budgets.rules)
                yield _StoreBackend(config, registry, BudgetLedger(redis, clock=clock))
        else:
            yield _AdminBackend(target)


@dataclass(frozen=True, slots=True)
class _StoreBackend:
    """The registry and ledger of a shared store, as the admin API's handlers use them."""

    config: Config
    registry: BudgetRegistry
    ledger: BudgetLedger

    async def usage(self, team: str | None) -> list[JsonObject]:
        from gateway.budgets.usage import budget_usage, status_dict

        return [status_dict(s) for s in await budget_usage(self.registry, self.ledger, team)]

    async def put(self, name: str, body: JsonObject) -> tuple[bool, JsonObject]:
        from gateway.budgets.registry import DeclaredInConfig
        from gateway.budgets.usage import status_dict
        from gateway.config.checks import checked
        from gateway.config.schema import BudgetRuleSpec
        from gateway.config.spend import admin_budget
        from gateway.errors import InvalidRequest

        budget, problems = admin_budget(checked(BudgetRuleSpec, body), self.config)
        if budget is None:
            raise InvalidRequest.from_problems(problems)
        try:
            created = await self.registry.put(budget)
        except DeclaredInConfig as exc:
            raise CliError(str(exc)) from exc
        (status,) = await self.ledger.budget_status(budget.team, [budget])
        return created, status_dict(status)

    async def delete(self, name: str) -> bool:
        from gateway.budgets.registry import DeclaredInConfig

        try:
            return await self.registry.delete(name)
        except DeclaredInConfig as exc:
            raise CliError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class _AdminBackend:
    api: AdminClient

    async def usage(self, team: str | None) -> list[JsonObject]:
        _, payload = await self.api.call(
            "GET", "/admin/budgets", params={"team": team} if team else None
        )
        data = payload.get("data")
        if not isinstance(data, list):
            raise CliError(f"unexpected answer from {self.api.base_url}: no 'data' list in it")
        return data

    async def put(self, name: str, body: JsonObject) -> tuple[bool, JsonObject]:
        status, payload = await self.api.call("PUT", _path(name), body=body)
        return status == 201, payload

    async def delete(self, name: str) -> bool:
        status, _ = await self.api.call(
            "DELETE", _path(name), answers=frozenset({"budget_not_found"})
        )
        return status != 404


def _path(name: str) -> str:
    return f"/admin/budgets/{quote(name, safe='')}"
