"""What the `spendgate` commands share: which config they read and their log level (`serve`
and `aggregate` too), and for the admin commands (`keys`, `budgets`, `report`), how they reach
the state (the store itself, or a running gateway's admin API when the store is in-process or
--url is given), their one-line errors and their plain-text tables.

`spendgate --help` builds every parser: aiohttp, redis and the config stack load only when a
command runs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    import aiohttp

    from gateway.config.model import Config, ServerConfig

ADMIN_KEY_ENV = "SPENDGATE_ADMIN_KEY"
CONFIG_ENV = "SPENDGATE_CONFIG"
LOCAL_CONFIG = Path("config/gateway.yaml")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONNECT_TIMEOUT_S = 3.0

JsonObject = dict[str, object]


class CliError(Exception):
    """A failure worth one line on stderr and exit status 1 (no traceback)."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"gateway config (default: ${CONFIG_ENV}, else {LOCAL_CONFIG} if it exists, else "
        "the packaged default)",
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="least severe log records written to stderr (default: INFO)",
    )


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --url and --admin-key: where the state is and how to reach it."""
    add_config_argument(parser)
    parser.add_argument(
        "--url",
        metavar="URL",
        help="base URL of a running gateway: go through its admin API (default for an "
        "in-process store, memory://: http://<server.host>:<server.port>; the local store and "
        "Redis are used directly)",
    )
    parser.add_argument(
        "--admin-key",
        metavar="KEY",
        help=f"admin key for the admin API (default: ${ADMIN_KEY_ENV}, else server.admin_key "
        "from the config)",
    )


def admin_parent() -> argparse.ArgumentParser:
    """The parent parser of an admin CLI's subcommands: `add_admin_arguments` and --json."""
    common = argparse.ArgumentParser(add_help=False)
    add_admin_arguments(common)
    common.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
    return common


async def run_command(name: str, command: Awaitable[int]) -> int:
    """Await a command; its expected failures become one line on stderr and exit status 1."""
    try:
        return await command
    except (CliError, GatewayError) as exc:
        print(f"spendgate {name}: {exc}", file=sys.stderr)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
    return 1


def config_path(given: str | None) -> Path:
    """As `spendgate serve` picks it: --config, $SPENDGATE_CONFIG, ./config, packaged default."""
    if given:
        return Path(given)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if LOCAL_CONFIG.is_file():
        return LOCAL_CONFIG
    return Path(str(importlib.resources.files("gateway") / "defaults" / "gateway.yaml"))


def load_config(path: Path) -> Config:
    from gateway.config.loader import load_config as load  # lazy: keeps `--url` commands light

    if not path.exists():
        raise CliError(f"config file {path} not found (pass --config PATH)")
    return load(str(path))


def raw_admin_key(path: Path) -> str | None:
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


def gateway_url(server: ServerConfig) -> str:
    # A server bound to every interface is reached on loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


@dataclass(frozen=True, slots=True)
class SharedStore:
    """A config whose store outlives a gateway (local://, redis://...): the command opens it
    itself (`gateway.store.connect.connected`)."""

    config: Config


@dataclass(frozen=True, slots=True)
class AdminClient:
    """A running gateway's admin API; errors come back as CliErrors naming what to do."""

    session: aiohttp.ClientSession
    base_url: str
    admin_key: str = field(repr=False)

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
        answers: frozenset[str] = frozenset(),
    ) -> tuple[int, JsonObject]:
        """(status, JSON object). An error whose code is in `answers` is returned, not raised:
        for the caller it is an answer (a key that does not exist, ...)."""
        status, raw = await self._request(method, path, body, params)
        payload = _json_object(raw)
        if payload is None:
            raise CliError(f"{self.base_url} answered HTTP {status} without JSON: not spendgate?")
        if status >= 400:
            error = payload.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            if code not in answers:
                raise self._failure(status, raw)
        return status, payload

    async def text(self, path: str, params: Mapping[str, str]) -> str:
        """A GET's body as text (reports rendered by the gateway)."""
        status, raw = await self._request("GET", path, None, params)
        if status >= 400:
            raise self._failure(status, raw)
        return raw.decode()

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, object] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[int, bytes]:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.admin_key}"}
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, params=params, headers=headers
            ) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            raise CliError(
                f"no spendgate gateway answers at {self.base_url}: start one with `spendgate serve`"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CliError(f"request to {self.base_url} failed: {exc!r}") from exc

    def _failure(self, status: int, raw: bytes) -> CliError:
        payload = _json_object(raw) or {}
        error = payload.get("error")
        details: Mapping[str, object] = error if isinstance(error, dict) else {}
        message = f"{details.get('message') or 'request failed'} (HTTP {status})"
        if status == 401:
            message += f" (pass --admin-key or set {ADMIN_KEY_ENV})"
        return CliError(message)


@asynccontextmanager
async def connect(
    args: argparse.Namespace, *, timeout_s: float
) -> AsyncIterator[SharedStore | AdminClient]:
    """The store itself, else a gateway's admin API (for an in-process store, which lives
    inside `spendgate serve`, or whenever --url is given)."""
    path = config_path(args.config)
    base_url: str | None = args.url
    if base_url is None:
        config = load_config(path)
        if not config.store.embedded:
            yield SharedStore(config)
            return
        base_url = gateway_url(config.server)
    async with admin_client(base_url, args.admin_key or _default_admin_key(path), timeout_s) as api:
        yield api


@asynccontextmanager
async def admin_client(
    base_url: str, admin_key: str | None, timeout_s: float
) -> AsyncIterator[AdminClient]:
    import aiohttp

    if not admin_key:
        raise CliError(f"no admin key: pass --admin-key or set {ADMIN_KEY_ENV}")
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=_CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield AdminClient(session, base_url.rstrip("/"), admin_key)


def _default_admin_key(path: Path) -> str | None:
    return os.environ.get(ADMIN_KEY_ENV) or raw_admin_key(path)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> str:
    """Left-aligned columns two spaces apart; `empty` on a line of its own when there are no
    rows, so the header still says what was looked for."""
    cells = [tuple(columns), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    if not rows:
        lines.append(empty)
    return "\n".join(lines)


def print_json(payload: object) -> None:
    print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())


def _json_object(raw: bytes) -> JsonObject | None:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None
