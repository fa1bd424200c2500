"""`spendgate keys create|list|revoke`: manage virtual keys from a shell.

With the local store (local://, the default) or a Redis (redis://...) the command opens the store
and uses the Keyring directly (the local store's server is the running gateway's, or one started
for the command). An in-process store (memory://) lives inside the running gateway, so then, or
whenever --url is given, the command goes through that gateway's admin API (`gateway.clikit`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast
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
    from gateway.store.keys import Keyring, KeyRole

_HTTP_TIMEOUT_S = 15.0
_COLUMNS = (
    *("key_id", "name", "team", "role", "source", "project", "env", "workload", "created"),
    "status",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = admin_parent()

    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="{create,list,revoke}")
    create = sub.add_parser("create", parents=[common], help="issue a key (shown once)")
    create.add_argument(
        "--team", help="team billed for the key's traffic (or whose spend a reader key reads)"
    )
    create.add_argument(
        "--role",
        choices=("client", "reader", "reporting"),
        default="client",
        help="client (default): sends traffic and reads its team's spend; reader: only reads "
        "its team's spend; reporting: reads every team's reports, no team, read-only",
    )
    create.add_argument("--project", help="allocation: the project its spend is charged to")
    create.add_argument(
        "--env", dest="environment", metavar="ENV", help="allocation: prod, dev, ..."
    )
    create.add_argument("--workload", help="allocation: what the traffic is for")
    create.add_argument(
        "--tag",
        dest="tags",
        action="append",
        type=_tag,
        default=[],
        metavar="KEY=VALUE",
        help="an allocation tag (repeatable)",
    )
    create.add_argument(
        "--name",
        help="a label for humans, e.g. the service using the key (not one of the team's "
        "config keys' names)",
    )

    listing = sub.add_parser("list", parents=[common], help="list keys (store and config)")
    listing.add_argument("--team", help="only this team's keys")
    listing.add_argument(
        "--all", dest="include_revoked", action="store_true", help="include revoked keys"
    )

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, e.g. key_0123456789ab")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    return await run_command("keys", _run(args))


async def _run(args: argparse.Namespace) -> int:
    async with _open_backend(args) as backend:
        return await _COMMANDS[args.keys_command](backend, args)


class _Backend(Protocol):
    async def create(self, new: NewKey) -> tuple[str, JsonObject]: ...
    async def list(self, team: str | None, include_revoked: bool) -> list[JsonObject]: ...
    async def revoke(self, key_id: str) -> JsonObject | None: ...


@dataclass(frozen=True, slots=True)
class NewKey:
    team: str | None
    role: str = "client"
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        fields: JsonObject = {
            "team": self.team,
            "role": self.role,
            "project": self.project,
            "environment": self.environment,
            "workload": self.workload,
            "name": self.name,
            "tags": dict(self.tags) or None,
        }
        return {k: v for k, v in fields.items() if v is not None}


async def _create(backend: _Backend, args: argparse.Namespace) -> int:
    if args.role != "reporting" and not args.team:
        raise CliError(f"a {args.role} key needs --team")
    new = NewKey(
        team=args.team,
        role=args.role,
        project=args.project,
        environment=args.environment,
        workload=args.workload,
        name=args.name,
        tags=dict(args.tags),
    )
    secret, info = await backend.create(new)
    if args.as_json:
        print_json({"key": secret, **info})
        return 0
    # The secret alone goes to stdout, so KEY=$(spendgate keys create ...) captures just it.
    owner = f"for team {info['team']}" if info.get("team") else "(no team)"
    role = info.get("role", "client")
    print(f"created {role} key {info['key_id']} {owner}; the key:", file=sys.stderr)
    print(secret)
    print("store it now: it is not shown again", file=sys.stderr)
    return 0


async def _list(backend: _Backend, args: argparse.Namespace) -> int:
    infos = await backend.list(args.team, args.include_revoked)
    if args.as_json:
        print_json({"data": infos})
    else:
        print(table(_COLUMNS, [_row(info) for info in infos], empty="(no keys)"))
    return 0


async def _revoke(backend: _Backend, args: argparse.Namespace) -> int:
    revoked = await backend.revoke(args.key_id)
    if revoked is None:
        raise CliError(f"no key with id {args.key_id!r}")
    if revoked.get("already_revoked"):
        # Nothing changed: say so, and fail, so a script learns the key was not live.
        when = _when(revoked.get("revoked_at"))
        raise CliError(f"{args.key_id} was already revoked ({when}); nothing changed")
    if args.as_json:
        print_json(revoked)
    else:
        print(f"revoked {args.key_id}")
    return 0


_COMMANDS = {"create": _create, "list": _list, "revoke": _revoke}


def _row(info: Mapping[str, object]) -> tuple[str, ...]:
    cells = (
        info.get(k) for k in ("key_id", "name", "team", "role", "source", "project", "environment")
    )
    status = "revoked" if info.get("revoked") else "active"
    workload = info.get("workload")
    return (
        *("-" if c is None else str(c) for c in cells),
        "-" if workload is None else str(workload),
        _when(info.get("created_at")),
        status,
    )


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(epoch))


@asynccontextmanager
async def _open_backend(args: argparse.Namespace) -> AsyncIterator[_Backend]:
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.store.connect import connected
            from gateway.store.keys import Keyring

            config = target.config
            async with connected(config.store) as redis:
                keyring = Keyring(redis, config.keys, config.server.key_cache_ttl_s)
                yield _StoreBackend(keyring, frozenset(config.teams))
        else:
            yield _AdminBackend(target)


@dataclass(frozen=True, slots=True)
class _StoreBackend:
    keyring: Keyring
    teams: frozenset[str]

    async def create(self, new: NewKey) -> tuple[str, JsonObject]:
        secret, info = await self.keyring.create(
            new.team,
            role=cast("KeyRole", new.role),  # one of argparse's choices
            project=new.project,
            environment=new.environment,
            workload=new.workload,
            name=new.name,
            tags=new.tags,
            known_teams=self.teams,
        )
        return secret, info.to_dict()

    async def list(self, team: str | None, include_revoked: bool) -> list[JsonObject]:
        infos = await self.keyring.list(team, include_revoked=include_revoked)
        return [info.to_dict() for info in infos]

    async def revoke(self, key_id: str) -> JsonObject | None:
        revoked = await self.keyring.revoke(key_id)
        return None if revoked is None else revoked.to_dict()


@dataclass(frozen=True, slots=True)
class _AdminBackend:
    api: AdminClient

    async def create(self, new: NewKey) -> tuple[str, JsonObject]:
        _, payload = await self.api.call("POST", "/admin/keys", body=new.to_json())
        secret = payload.pop("key", None)
        if not isinstance(secret, str):
            raise CliError(f"unexpected answer from {self.api.base_url}: no key in it")
        return secret, payload

    async def list(self, team: str | None, include_revoked: bool) -> list[JsonObject]:
        params = {"include_revoked": "true" if include_revoked else "false"}
        if team:
            params["team"] = team
        _, payload = await self.api.call("GET", "/admin/keys", params=params)
        data = payload.get("data")
        if not isinstance(data, list):
            raise CliError(f"unexpected answer from {self.api.base_url}: no 'data' list in it")
        return data

    async def revoke(self, key_id: str) -> JsonObject | None:
        path = f"/admin/keys/{quote(key_id, safe='')}"
        status, payload = await self.api.call("DELETE", path, answers=frozenset({"key_not_found"}))
        return None if status == 404 else payload


def _tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
