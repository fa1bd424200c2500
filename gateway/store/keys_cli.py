"""`spendgate keys create|list|revoke`: manage virtual keys from a shell.

With a shared store (redis://...) the command opens it and uses the Keyring directly. An embedded
store (memory://) lives inside the running gateway, so then, or whenever --url is given, the
command goes through that gateway's admin API instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import orjson

from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    import aiohttp

    from gateway.config.model import Config, ServerConfig
    from gateway.store.keys import Keyring

# `spendgate --help` builds this parser: aiohttp and redis are imported only when a command runs.

ADMIN_KEY_ENV = "SPENDGATE_ADMIN_KEY"
CONFIG_ENV = "SPENDGATE_CONFIG"
_LOCAL_CONFIG = Path("config/gateway.yaml")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HTTP_TIMEOUT_S = 15.0
_CONNECT_TIMEOUT_S = 3.0
_COLUMNS = ("key_id", "name", "team", "project", "env", "workload", "created", "status")

KeyDict = dict[str, object]


class CliError(Exception):
    """A failure worth one line on stderr and exit status 1 (no traceback)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help=f"gateway config (default: ${CONFIG_ENV}, else {_LOCAL_CONFIG} if it exists, else "
        "the packaged default)",
    )
    common.add_argument(
        "--url",
        metavar="URL",
        help="base URL of a running gateway: manage keys through its admin API "
        "(default for an embedded store: http://<server.host>:<server.port>)",
    )
    common.add_argument(
        "--admin-key",
        metavar="KEY",
        help=f"admin key for the admin API (default: ${ADMIN_KEY_ENV}, else server.admin_key "
        "from the config)",
    )
    common.add_argument("--json", action="store_true", dest="as_json", help="print JSON")

    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="{create,list,revoke}")
    create = sub.add_parser("create", parents=[common], help="issue a key (shown once)")
    create.add_argument("--team", required=True, help="team billed for the key's traffic")
    create.add_argument("--project")
    create.add_argument("--env", dest="environment", metavar="ENV")
    create.add_argument("--workload")
    create.add_argument(
        "--tag", dest="tags", action="append", type=_tag, default=[], metavar="KEY=VALUE"
    )
    create.add_argument("--name", help="a label for humans, e.g. the service using the key")

    listing = sub.add_parser("list", parents=[common], help="list keys")
    listing.add_argument("--team", help="only this team's keys")
    listing.add_argument(
        "--all", dest="include_revoked", action="store_true", help="include revoked keys"
    )

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, e.g. key_0123456789ab")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    try:
        async with _open_backend(args) as backend:
            return await _COMMANDS[args.keys_command](backend, args)
    except (CliError, GatewayError) as exc:
        print(f"spendgate keys: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1


class _Backend(Protocol):
    async def create(self, new: NewKey) -> tuple[str, KeyDict]: ...
    async def list(self, team: str | None, include_revoked: bool) -> list[KeyDict]: ...
    async def revoke(self, key_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class NewKey:
    team: str
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> KeyDict:
        fields: KeyDict = {
            "team": self.team,
            "project": self.project,
            "environment": self.environment,
            "workload": self.workload,
            "name": self.name,
            "tags": dict(self.tags) or None,
        }
        return {k: v for k, v in fields.items() if v is not None}


async def _create(backend: _Backend, args: argparse.Namespace) -> int:
    new = NewKey(
        team=args.team,
        project=args.project,
        environment=args.environment,
        workload=args.workload,
        name=args.name,
        tags=dict(args.tags),
    )
    secret, info = await backend.create(new)
    if args.as_json:
        print(orjson.dumps({"key": secret, **info}, option=orjson.OPT_INDENT_2).decode())
        return 0
    # The secret alone goes to stdout, so KEY=$(spendgate keys create ...) captures just it.
    print(f"created {info['key_id']} for team {info['team']}; the key:", file=sys.stderr)
    print(secret)
    print("store it now: it is not shown again", file=sys.stderr)
    return 0


async def _list(backend: _Backend, args: argparse.Namespace) -> int:
    infos = await backend.list(args.team, args.include_revoked)
    if args.as_json:
        print(orjson.dumps({"data": infos}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_table(infos))
    return 0


async def _revoke(backend: _Backend, args: argparse.Namespace) -> int:
    if not await backend.revoke(args.key_id):
        raise CliError(f"no key with id {args.key_id!r}")
    if args.as_json:
        print(orjson.dumps({"key_id": args.key_id, "revoked": True}).decode())
    else:
        print(f"revoked {args.key_id}")
    return 0


_COMMANDS = {"create": _create, "list": _list, "revoke": _revoke}


def _table(infos: Sequence[Mapping[str, object]]) -> str:
    rows = [_COLUMNS, *(_row(info) for info in infos)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if not infos:
        lines.append("(no keys)")
    return "\n".join(line.rstrip() for line in lines)


def _row(info: Mapping[str, object]) -> tuple[str, ...]:
    created = info.get("created_at")
    when = (
        time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(created))
        if isinstance(created, int | float)
        else "(config)"
    )
    cells = (info.get(k) for k in ("key_id", "name", "team", "project", "environment", "workload"))
    status = "revoked" if info.get("revoked") else "active"
    return (*("-" if c is None else str(c) for c in cells), when, status)


@asynccontextmanager
async def _open_backend(args: argparse.Namespace) -> AsyncIterator[_Backend]:
    """The shared store itself when the config names one, else a gateway's admin API."""
    import aiohttp

    from gateway.store.connect import close_store, is_embedded, open_store
    from gateway.store.keys import Keyring

    config_path = _config_path(args.config)
    base_url: str | None = args.url
    if base_url is None:
        config = _load_config(config_path)
        if not is_embedded(config.store.url):
            redis = await open_store(config.store.url)
            try:
                keyring = Keyring(redis, config.keys, config.server.key_cache_ttl_s)
                yield _StoreBackend(keyring, frozenset(config.teams))
            finally:
                await close_store(redis)
            return
        base_url = _gateway_url(config.server)
    admin_key = args.admin_key or os.environ.get(ADMIN_KEY_ENV) or _raw_admin_key(config_path)
    if not admin_key:
        raise CliError(f"no admin key: pass --admin-key or set {ADMIN_KEY_ENV}")
    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield _AdminApi(session, base_url.rstrip("/"), admin_key)


@dataclass(frozen=True, slots=True)
class _StoreBackend:
    keyring: Keyring
    teams: frozenset[str]

    async def create(self, new: NewKey) -> tuple[str, KeyDict]:
        secret, info = await self.keyring.create(
            new.team,
            project=new.project,
            environment=new.environment,
            workload=new.workload,
            name=new.name,
            tags=new.tags,
            known_teams=self.teams,
        )
        return secret, info.to_dict()

    async def list(self, team: str | None, include_revoked: bool) -> list[KeyDict]:
        infos = await self.keyring.list(team, include_revoked=include_revoked)
        return [info.to_dict() for info in infos]

    async def revoke(self, key_id: str) -> bool:
        return await self.keyring.revoke(key_id)


@dataclass(frozen=True, slots=True)
class _AdminApi:
    session: aiohttp.ClientSession
    base_url: str
    admin_key: str = field(repr=False)

    async def create(self, new: NewKey) -> tuple[str, KeyDict]:
        _, payload = await self._call("POST", "/admin/keys", body=new.to_json())
        secret = payload.pop("key", None)
        if not isinstance(secret, str):
            raise CliError(f"unexpected answer from {self.base_url}: no key in it")
        return secret, payload

    async def list(self, team: str | None, include_revoked: bool) -> list[KeyDict]:
        params = {"include_revoked": "true" if include_revoked else "false"}
        if team:
            params["team"] = team
        _, payload = await self._call("GET", "/admin/keys", params=params)
        data = payload.get("data")
        if not isinstance(data, list):
            raise CliError(f"unexpected answer from {self.base_url}: no 'data' list in it")
        return data

    async def revoke(self, key_id: str) -> bool:
        status, _ = await self._call("DELETE", f"/admin/keys/{quote(key_id, safe='')}")
        return status != 404

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: KeyDict | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, KeyDict]:
        """(status, JSON object); a 404 for a missing key is an answer, other errors raise."""
        import aiohttp

        headers = {"Authorization": f"Bearer {self.admin_key}"}
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, params=params, headers=headers
            ) as resp:
                status, raw = resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            raise CliError(
                f"no spendgate gateway answers at {self.base_url}: start one with `spendgate serve`"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CliError(f"request to {self.base_url} failed: {exc!r}") from exc
        payload = _json_object(raw)
        if payload is None:
            raise CliError(f"{self.base_url} answered HTTP {status} without JSON: not spendgate?")
        if status < 400:
            return status, payload
        error = payload.get("error")
        details: Mapping[str, object] = error if isinstance(error, dict) else {}
        if status == 404 and details.get("code") == "key_not_found":
            return status, payload
        message = str(details.get("message") or "request failed")
        if status == 401:
            message += f" (pass --admin-key or set {ADMIN_KEY_ENV})"
        raise CliError(f"{message} (HTTP {status})")


def _tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _config_path(given: str | None) -> Path:
    """As `spendgate serve` picks it: --config, $SPENDGATE_CONFIG, ./config, packaged default."""
    if given:
        return Path(given)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if _LOCAL_CONFIG.is_file():
        return _LOCAL_CONFIG
    return Path(str(importlib.resources.files("gateway") / "defaults" / "gateway.yaml"))


def _load_config(path: Path) -> Config:
    from gateway.config.loader import load_config  # lazy: keeps `keys --url` light

    if not path.exists():
        raise CliError(f"config file {path} not found (pass --config PATH)")
    return load_config(str(path))


def _raw_admin_key(path: Path) -> str | None:
    """server.admin_key as written, ${VAR:-default} substituted.

    The compiled config keeps only the key's digest, but the embedded demo's admin key is
    `${SPENDGATE_ADMIN_KEY:-...}` in the YAML, which a local CLI can read back.
    """
    import yaml  # lazy: only needed when no admin key was given

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    server = raw.get("server") if isinstance(raw, dict) else None
    value = server.get("admin_key") if isinstance(server, dict) else None
    if not isinstance(value, str):
        return None
    return _ENV_REF.sub(lambda m: os.environ.get(m[1]) or m[2] or "", value) or None


def _gateway_url(server: ServerConfig) -> str:
    # A server bound to every interface is reached on loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def _json_object(raw: bytes) -> KeyDict | None:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None
