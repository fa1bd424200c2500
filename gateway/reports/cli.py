"""`spendgate report showback|chargeback|focus`: FinOps reports from a shell.

As `spendgate keys`: with a shared store (redis://...) the command reads the rollups itself; an
embedded store (memory://) lives inside the running gateway, so then, or whenever --url is
given, the report comes from that gateway's admin API (rendered there, in the same format).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from gateway.errors import ConfigError, GatewayError
from gateway.store.keys_cli import (
    ADMIN_KEY_ENV,
    CONFIG_ENV,
    CliError,
    _config_path,
    _gateway_url,
    _load_config,
    _raw_admin_key,
)

if TYPE_CHECKING:  # `spendgate --help` builds the parser: the report stack loads when one runs
    from gateway.reports.build import Period

_HTTP_TIMEOUT_S = 120.0  # a year of FOCUS rows takes a while to build
_CONNECT_TIMEOUT_S = 3.0
_KINDS = ("showback", "chargeback", "focus")
_FORMATS = ("table", "csv", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=_KINDS, help="which report")
    parser.add_argument(
        "--period", metavar="YYYY-MM", help="a calendar month (UTC); default: the current one"
    )
    parser.add_argument("--start", metavar="YYYY-MM-DD", help="showback: first day (UTC)")
    parser.add_argument("--end", metavar="YYYY-MM-DD", help="showback: last day, inclusive")
    parser.add_argument(
        "--format", choices=_FORMATS, help="output format (default: table; focus: csv)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"gateway config (default: ${CONFIG_ENV}, else config/gateway.yaml if it exists, "
        "else the packaged default)",
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        help="base URL of a running gateway: get the report from its admin API (default for "
        "an embedded store: http://<server.host>:<server.port>)",
    )
    parser.add_argument(
        "--admin-key",
        metavar="KEY",
        help=f"admin key for the admin API (default: ${ADMIN_KEY_ENV}, else server.admin_key)",
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace) -> int:
    try:
        period = _period(args)
        fmt = args.format or ("csv" if args.kind == "focus" else "table")
        text = await _report_text(args, period, fmt)
    except (CliError, GatewayError, ValueError) as exc:
        print(f"spendgate report: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, text)
        print(f"wrote {args.kind} {period.label} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _period(args: argparse.Namespace) -> Period:
    from gateway.reports.build import Period

    if args.start or args.end:
        if args.kind != "showback":
            raise CliError(f"{args.kind} covers one month: use --period YYYY-MM")
        if args.period:
            raise CliError("give --period or --start/--end, not both")
        if not (args.start and args.end):
            raise CliError("give both --start and --end")
        return Period.of_days(args.start, args.end)
    if args.period:
        return Period.of_month(args.period)
    now = datetime.now(UTC)
    return Period.month_to_date(now) if args.kind == "showback" else Period.current_month(now)


async def _report_text(args: argparse.Namespace, period: Period, fmt: str) -> str:
    from gateway.reports.build import build_report
    from gateway.reports.render import render
    from gateway.store.connect import close_store, is_embedded, open_store

    config_path = _config_path(args.config)
    base_url: str | None = args.url
    if base_url is None:
        config = _load_config(config_path)
        if not is_embedded(config.store.url):
            redis = await open_store(config.store.url)
            try:
                report = await build_report(args.kind, config, redis, period)
            finally:
                await close_store(redis)
            return render(report, fmt)  # type: ignore[arg-type]  # argparse checked choices
        base_url = _gateway_url(config.server)
    admin_key = args.admin_key or os.environ.get(ADMIN_KEY_ENV) or _raw_admin_key(config_path)
    if not admin_key:
        raise CliError(f"no admin key: pass --admin-key or set {ADMIN_KEY_ENV}")
    params = {"format": fmt}
    if args.kind == "showback":
        params.update(start=period.start.isoformat(), end=period.end.isoformat())
    else:
        params["period"] = period.label
    return await _fetch(base_url.rstrip("/"), f"/admin/reports/{args.kind}", params, admin_key)


async def _fetch(base_url: str, path: str, params: dict[str, str], admin_key: str) -> str:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(base_url + path, params=params, headers=headers) as resp,
        ):
            status, raw = resp.status, await resp.read()
    except aiohttp.ClientConnectorError as exc:
        raise CliError(
            f"no spendgate gateway answers at {base_url}: start one with `spendgate serve`"
        ) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"request to {base_url} failed: {exc!r}") from exc
    if status < 400:
        return raw.decode()
    message = f"HTTP {status}"
    try:
        error = orjson.loads(raw).get("error", {})
        message = f"{error.get('message') or 'request failed'} (HTTP {status})"
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if status == 401:
        message += f" (pass --admin-key or set {ADMIN_KEY_ENV})"
    raise CliError(message)
