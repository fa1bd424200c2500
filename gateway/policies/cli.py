"""`spendgate approvals list|approve|deny`: approvals of requests over a policy's limit.

As `spendgate keys`: with the local store or a Redis the command uses the store itself; with an
in-process one (memory://), or whenever --url is given, it goes through a running gateway's
admin API (`gateway.clikit`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
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
    from gateway.config.model import Config
    from gateway.policies.approvals import ApprovalStore

Clock = Callable[[], float]

_HTTP_TIMEOUT_S = 15.0
_STATUSES = ("pending", "approved", "denied", "expired")  # approvals.STATUSES, not imported
_COLUMNS: tuple[str, ...] = ("id", "status", "policy", "team", "key", "model", "est_cost_usd")
_COLUMNS += ("asks", "asked_at", "expires_at", "reason")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = admin_parent()

    sub = parser.add_subparsers(
        dest="approvals_command", required=True, metavar="{list,approve,deny}"
    )
    listing = sub.add_parser("list", parents=[common], help="approvals, newest first")
    listing.add_argument("--status", choices=_STATUSES, help="only those with this status now")
    listing.add_argument("--team", help="only this team's")

    approve = sub.add_parser("approve", parents=[common], help="approve an approval by its id")
    approve.add_argument("approval_id", metavar="ID", help="the approval's id, e.g. apr_0123...")
    approve.add_argument(
        "--window",
        type=_duration,
        metavar="DURATION",
        help="how long it lasts: seconds, or 30m, 8h, 7d (default: the policy's grant_s)",
    )
    approve.add_argument(
        "--requests", type=_positive, metavar="N", help="for at most N requests (default: any)"
    )
    deny = sub.add_parser("deny", parents=[common], help="deny an approval by its id")
    deny.add_argument("approval_id", metavar="ID", help="the approval's id")
    for decision in (approve, deny):
        decision.add_argument(
            "--by", default=None, help="who decides, for the record (default: your user name)"
        )
        decision.add_argument("--note", default="", help="why, for the record")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, *, clock: Clock = time.time) -> int:
    """`clock` dates decisions when the command uses the store itself."""
    return await run_command("approvals", _run(args, clock))


async def _run(args: argparse.Namespace, clock: Clock) -> int:
    async with _open_backend(args, clock) as backend:
        return await _COMMANDS[args.approvals_command](backend, args)


class _Backend(Protocol):
    async def list(self, status: str | None, team: str | None) -> list[JsonObject]: ...
    async def decide(self, approval_id: str, decision: str, body: JsonObject) -> JsonObject: ...


async def _list(backend: _Backend, args: argparse.Namespace) -> int:
    found = await backend.list(args.status, args.team)
    if args.as_json:
        print_json({"data": found})
    else:
        print(table(_COLUMNS, [_row(a) for a in found], empty="(no approvals)"))
    return 0


async def _decide(backend: _Backend, args: argparse.Namespace) -> int:
    decision = "approve" if args.approvals_command == "approve" else "deny"
    body: JsonObject = {"by": args.by or _user(), "note": args.note}
    if decision == "approve":
        if args.window is not None:
            body["window_s"] = args.window
        if args.requests is not None:
            body["requests"] = args.requests
    decided = await backend.decide(args.approval_id, decision, body)
    if args.as_json:
        print_json(decided)
        return 0
    grant = ""
    if decided.get("status") == "approved":
        count = decided.get("requests")
        grant = f" until {decided.get('expires_at')}"
        grant += f" or {count} requests" if count is not None else ""
    print(
        f"{decided.get('status')} {decided.get('id')}: key {decided.get('key_id')} "
        f"({decided.get('team')}), model {decided.get('model')}{grant}"
    )
    return 0


_COMMANDS = {"list": _list, "approve": _decide, "deny": _decide}


def _row(a: Mapping[str, object]) -> tuple[str, ...]:
    key = a.get("key_name") or a.get("key_id")
    cells = (
        a.get("id"),
        a.get("status"),
        a.get("policy"),
        a.get("team"),
        key,
        a.get("model"),
        a.get("estimated_cost_usd"),
        a.get("asks"),
        a.get("asked_at"),
        a.get("expires_at"),
        a.get("reason"),
    )
    return tuple("-" if c is None else str(c) for c in cells)


@asynccontextmanager
async def _open_backend(args: argparse.Namespace, clock: Clock) -> AsyncIterator[_Backend]:
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.policies.approvals import ApprovalStore
            from gateway.store.connect import connected

            async with connected(target.config.store) as redis:
                yield _StoreBackend(ApprovalStore(redis, clock), target.config, clock)
        else:
            yield _AdminBackend(target)


@dataclass(frozen=True, slots=True)
class _StoreBackend:
    store: ApprovalStore
    config: Config
    clock: Clock

    async def list(self, status: str | None, team: str | None) -> list[JsonObject]:
        found = await self.store.list(status=status, team=team)  # type: ignore[arg-type]
        now = int(self.clock() * 1000)
        return [a.to_dict(now) for a in found]

    async def decide(self, approval_id: str, decision: str, body: JsonObject) -> JsonObject:
        from gateway.policies.approvals import Superseded

        found = await self.store.get(approval_id)
        if found is None:
            raise CliError(f"no approval {approval_id!r}")
        policies = self.config.policies
        if decision == "approve":
            window = body.get("window_s")
            window_s = float(window) if isinstance(window, int | float) else None
            requests = body.get("requests")
            outcome = "approved"
        else:
            window_s, requests, outcome = policies.approval_ttl_s, None, "denied"
        try:
            decided = await self.store.decide(
                approval_id,
                outcome,  # type: ignore[arg-type]
                window_s=window_s if window_s is not None else policies.grant_s(found.policy),
                requests=requests if isinstance(requests, int) else None,
                by=str(body["by"]),
                note=str(body["note"]),
            )
        except Superseded as exc:
            raise CliError(str(exc)) from exc
        if decided is None:
            raise CliError(f"no approval {approval_id!r}")
        return decided.to_dict(int(self.clock() * 1000))


@dataclass(frozen=True, slots=True)
class _AdminBackend:
    api: AdminClient

    async def list(self, status: str | None, team: str | None) -> list[JsonObject]:
        params = {k: v for k, v in (("status", status), ("team", team)) if v}
        _, payload = await self.api.call("GET", "/admin/approvals", params=params)
        data = payload.get("data")
        if not isinstance(data, list):
            raise CliError(f"unexpected answer from {self.api.base_url}: no 'data' list in it")
        return data

    async def decide(self, approval_id: str, decision: str, body: JsonObject) -> JsonObject:
        path = f"/admin/approvals/{quote(approval_id, safe='')}/{decision}"
        if decision == "deny":
            body = {k: v for k, v in body.items() if k in ("by", "note")}
        _, payload = await self.api.call("POST", path, body=body)
        return payload


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds or 30m, 8h, 7d; got {text!r}")
    return float(match[1]) * _UNIT_S[match[2]]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "admin"
