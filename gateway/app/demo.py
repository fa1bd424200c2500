"""`spendgate demo`: the offline quick start. Mock upstream + gateway on the local store, a
short burst of traffic as three teams, a spend table, then it keeps serving for you to try.

The demo's store lives in a temporary directory, removed at exit: every run starts from the
same empty budgets (the demo teams' are small) and leaves nothing in the working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app.server import create_app
from gateway.app.state import CLOCK, KEYRING, LIVE_CONFIG, REDIS
from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError
from gateway.listen import PortUnavailable, check_port, start_site
from gateway.providers.base import MOCK_PORT
from gateway.providers.mock import MockOptions, serve_mock
from gateway.store.server import StoreServerError

HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8080  # the packaged config's server.port, which the README's examples use
TEAMS = {"search": "ranking", "support": "helpdesk-bot", "research": "evals"}
_PROMPTS = [
    "Summarise the quarterly cost report in three bullet points.",
    "Classify this ticket: my invoice shows a duplicate charge for November.",
    "Write a SQL query that returns the ten most expensive teams by spend this month.",
    "Translate 'budget exceeded' into French, German and Japanese.",
]


async def _traffic(base: str, keys: dict[str, str], count: int) -> int:
    """Send `count` mixed requests (chat, streamed chat, embeddings); return failures."""
    rng = random.Random(7)
    failures = 0
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            team = list(keys)[i % len(keys)]
            headers = {"Authorization": f"Bearer {keys[team]}"}
            kind = rng.choice(["chat", "chat", "stream", "embed", "auto"])
            prompt = rng.choice(_PROMPTS)
            if kind == "embed":
                path = "/v1/embeddings"
                body: dict[str, object] = {"model": "text-embedding-3-small", "input": prompt}
            elif kind == "auto":  # the tier picks the model; premium hints get the big one
                path = "/v1/chat/completions"
                body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
                if rng.random() < 0.3:
                    headers["x-sg-tier"] = "premium"
            else:
                path = "/v1/chat/completions"
                body = {
                    "model": rng.choice(["gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "o3-mini"]),
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": rng.choice([32, 64, 128]),
                    "stream": kind == "stream",
                }
            async with session.post(base + path, json=body, headers=headers) as response:
                await response.read()
                failures += response.status != 200
    return failures


async def _showback(app: web.Application, expected: int) -> str:
    """Per-team spend from the ledger's rollups, once the embedded aggregator has them all."""
    from gateway.reports.build import Period, build_report

    config = app[LIVE_CONFIG].current
    period = Period.current_month(datetime.fromtimestamp(app[CLOCK](), UTC))
    document: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while True:
                report = await build_report("showback", config, app[REDIS], period)
                document = dict(report.document)
                if int(document.get("total", {}).get("requests", 0)) >= expected:
                    break
                await asyncio.sleep(0.1)
    lines = [
        f"{'team':<10} {'requests':>8} {'cache hits':>10} {'cost (USD)':>13} "
        f"{'list (USD)':>13} {'saved (USD)':>13}",
        "-" * 72,
    ]
    rows = [*document.get("teams", []), {"team": "total", **document.get("total", {})}]
    for row in rows:
        lines.append(
            f"{row['team']:<10} {row.get('requests', 0):>8} {row.get('cache_hits', 0):>10} "
            f"{row.get('cost_usd', '0'):>13.11} {row.get('list_cost_usd', '0'):>13.11} "
            f"{row.get('savings_usd', '0'):>13.11}"
        )
    return "\n".join(lines)


def _port_or_free(port: int | None, default: int) -> int:
    """`port` when one was given (PortUnavailable if it cannot be listened on), else `default`,
    or 0 (any free port) when something holds it already: a second demo, another server."""
    try:
        check_port(HOST, default if port is None else port)
    except PortUnavailable as exc:
        if port is not None or not exc.in_use:
            raise
        return 0
    return default if port is None else port


def _moved(what: str, given: int | None, default: int, chosen: int, bound: int) -> None:
    """Say so when the default port was taken and a free one is used instead."""
    if given is None and chosen == 0:
        print(f"port {default} is in use: the {what} listens on port {bound} instead")


async def _run(
    port: int | None, upstream_port: int | None, duration: float | None, requests: int
) -> int:
    try:
        mock_port = _port_or_free(upstream_port, MOCK_PORT)
    except PortUnavailable as exc:
        print(f"spendgate demo: {exc.message('--upstream-port')}", file=sys.stderr)
        return 1
    try:
        gateway_port = _port_or_free(port, DEFAULT_GATEWAY_PORT)
    except PortUnavailable as exc:
        print(f"spendgate demo: {exc.message('--port')}", file=sys.stderr)
        return 1
    try:
        mock = await serve_mock(HOST, mock_port, MockOptions(latency_s=0.01, chunk_delay_s=0.002))
    except PortUnavailable as exc:  # taken since it was checked
        print(f"spendgate demo: {exc}", file=sys.stderr)
        return 1
    bound = int(mock.addresses[0][1])
    _moved("mock upstream", upstream_port, MOCK_PORT, mock_port, bound)
    try:
        return await _run_gateway(port, gateway_port, bound, duration, requests)
    finally:
        await mock.cleanup()


async def _run_gateway(
    given: int | None, port: int, upstream_port: int, duration: float | None, requests: int
) -> int:
    os.environ["SPENDGATE_UPSTREAM_URL"] = f"http://{HOST}:{upstream_port}/v1"
    try:
        config = load_config(None)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="spendgate-demo-") as scratch:
        if config.store.local:
            store = replace(
                config.store,
                data_dir=str(Path(scratch) / "store"),
                spool_dir=str(Path(scratch) / "spool"),
            )
            config = replace(config, store=store)
        return await _serve_demo(config, given, port, upstream_port, duration, requests)


async def _serve_demo(
    config: Config,
    given: int | None,
    port: int,
    upstream_port: int,
    duration: float | None,
    requests: int,
) -> int:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
    except StoreServerError as exc:
        print(f"spendgate demo: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            bound = await start_site(runner, HOST, port)
        except PortUnavailable as exc:  # taken since it was checked
            print(f"spendgate demo: {exc}", file=sys.stderr)
            return 1
        _moved("gateway", given, DEFAULT_GATEWAY_PORT, port, bound)
        base = f"http://{HOST}:{bound}"
        keys = {}
        for team, project in TEAMS.items():
            # Not "<team>-demo": the default config declares keys by those names.
            name = f"{team}-quickstart"
            secret, _ = await app[KEYRING].create(
                team, project=project, environment="dev", name=name
            )
            keys[team] = secret
        print(f"spendgate demo: gateway on {base}/v1, mock upstream on port {upstream_port}")
        failures = await _traffic(base, keys, requests)
        print(f"\nsent {requests} requests as {len(keys)} teams ({failures} failed)\n")
        print(await _showback(app, requests))
        print(
            "\nTry it yourself (this key belongs to team 'search'):\n"
            f"  export OPENAI_BASE_URL={base}/v1\n"
            f"  export OPENAI_API_KEY={keys['search']}\n"
            f'  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer '
            f"$OPENAI_API_KEY\" -H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "gpt-4o-mini", "messages": [{"role": "user", '
            '"content": "hi"}]}\' -i\n'
            f"  metrics: {base}/metrics\n"
            f"  keys:    spendgate keys list --url {base}\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if duration is None:
            print("serving until Ctrl-C", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        return 1 if failures else 0
    finally:
        await runner.cleanup()


def run_demo(
    port: int | None, upstream_port: int | None, duration: float | None, requests: int
) -> int:
    """`port`, `upstream_port`: None for the defaults, or a free port where one is taken."""
    from gateway.logs import configure_logging

    configure_logging("WARNING", access_log=False, json=False)
    return asyncio.run(_run(port, upstream_port, duration, requests))
