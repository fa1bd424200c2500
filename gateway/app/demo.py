"""`spendgate demo`: the offline quick start. Mock upstream + gateway on the embedded store,
a short burst of traffic as three teams, a spend table, then it keeps serving for you to try.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import defaultdict

import aiohttp
from aiohttp import web

from gateway.app.server import create_app
from gateway.app.state import KEYRING, METRICS
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.providers.mock import MockOptions, serve_mock

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
            kind = rng.choice(["chat", "chat", "stream", "embed"])
            prompt = rng.choice(_PROMPTS)
            if kind == "embed":
                path = "/v1/embeddings"
                body: dict[str, object] = {"model": "text-embedding-3-small", "input": prompt}
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


def _spend_table(metrics: Metrics) -> str:
    spend: dict[tuple[str, str], float] = defaultdict(float)
    for family in metrics.cost_usd.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                spend[(sample.labels["team"], sample.labels["model"])] += sample.value
    lines = [f"{'team':<10} {'model':<24} {'spend (USD)':>14}", "-" * 50]
    for (team, model), usd in sorted(spend.items()):
        lines.append(f"{team:<10} {model:<24} {usd:>14.6f}")
    lines.append(f"{'total':<35} {sum(spend.values()):>14.6f}")
    return "\n".join(lines)


async def _run(port: int, upstream_port: int, duration: float | None, requests: int) -> int:
    mock = await serve_mock(
        "127.0.0.1", upstream_port, MockOptions(latency_s=0.01, chunk_delay_s=0.002)
    )
    os.environ["SPENDGATE_UPSTREAM_URL"] = f"http://127.0.0.1:{upstream_port}/v1"
    try:
        config = load_config(None)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        await mock.cleanup()
        return 1
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        keys = {}
        for team, project in TEAMS.items():
            secret, _ = await app[KEYRING].create(
                team, project=project, environment="dev", name=f"{team}-demo"
            )
            keys[team] = secret
        print(f"spendgate demo: gateway on {base}/v1, mock upstream on port {upstream_port}")
        failures = await _traffic(base, keys, requests)
        print(f"\nsent {requests} requests as {len(keys)} teams ({failures} failed)\n")
        print(_spend_table(app[METRICS]))
        print(
            "\nTry it yourself (this key belongs to team 'search'):\n"
            f"  export OPENAI_BASE_URL={base}/v1\n"
            f"  export OPENAI_API_KEY={keys['search']}\n"
            f'  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer '
            f"$OPENAI_API_KEY\" -H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "gpt-4o-mini", "messages": [{"role": "user", '
            '"content": "hi"}]}\' -i\n'
            f"  metrics: {base}/metrics\n",
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
        await mock.cleanup()


def run_demo(port: int, upstream_port: int, duration: float | None, requests: int) -> int:
    from gateway.app.logs import configure_logging

    configure_logging("WARNING", access_log=False, json=False)
    return asyncio.run(_run(port, upstream_port, duration, requests))
