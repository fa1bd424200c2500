"""The aggregator service: embedded in a process over the in-memory store (as `serve` runs it)
and as the `spendgate aggregate` process against a real Redis, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.aggregator.service import run_embedded
from gateway.config.model import AggregatorConfig, Config, ServerConfig, StoreConfig, TeamConfig
from gateway.rollupformat import hour_bucket
from gateway.store.connect import close_store, open_store
from tests.ledger import AGGREGATOR_DB, NOW, T0_MS, backlog, db_url, event, produce, rollup_hash

DAY = hour_bucket(T0_MS)[:8]


def make_config(tmp_path: Path, **aggregator: object) -> Config:
    settings: dict[str, object] = {"block_ms": 20, "archive_dir": str(tmp_path / "archive")}
    settings.update(aggregator)
    return Config(
        source="<test>",
        server=ServerConfig(),
        store=StoreConfig(),
        providers={},
        models={},
        teams={"alpha": TeamConfig("alpha")},
        aggregator=AggregatorConfig(**settings),  # type: ignore[arg-type]
    )


async def test_embedded_aggregator_follows_reloads_and_stops(tmp_path: Path) -> None:
    redis = await open_store("memory://")
    config = make_config(tmp_path)
    current = [config]
    metrics = AggregatorMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_embedded(redis, lambda: current[0], stop, metrics=metrics, clock=NOW)
    )
    try:
        await produce(redis, [event(i, cost_nano=10) for i in range(50)])
        for _ in range(400):
            if metrics.events.labels("applied")._value.get() == 50:
                break
            await asyncio.sleep(0.05)
        team = await rollup_hash(redis, "alpha", "d", DAY, "team")
        assert team["alpha|cost"] == 500
        # A reload that shortens retention to nothing: the next archive run empties the stream.
        current[0] = replace(config, aggregator=replace(config.aggregator, stream_retention_s=0))
        for _ in range(200):
            if not await redis.xlen(rediskeys.events_stream("alpha")):
                break
            await asyncio.sleep(0.1)
        assert await redis.xlen(rediskeys.events_stream("alpha")) == 0
        assert list((tmp_path / "archive" / "alpha").glob("*.jsonl.gz"))
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await close_store(redis)


CONFIG = """\
store:
  url: {url}
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}}
models:
  gpt-4o:
    deployments: [{{provider: mock, model: gpt-4o}}]
teams:
  alpha: {{}}
aggregator:
  block_ms: 50
  archive_dir: {archive}
"""


# `spendgate aggregate` is a process of its own only against a Redis of the user's.
@pytest.mark.parametrize("redis", ["redis"], indirect=True)
async def test_aggregate_process_applies_and_stops_on_sigterm(
    redis: Redis, real_redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        CONFIG.format(url=db_url(real_redis_url, AGGREGATOR_DB), archive=tmp_path / "archive")
    )
    await produce(redis, [event(i, cost_nano=3) for i in range(200)])
    code = "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "aggregate", "--help",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await probe.wait() != 0:  # not wired into gateway/cli.py yet: call the module directly
        code = (
            "import argparse, sys; from gateway.aggregator import cli; "
            "p = argparse.ArgumentParser(); cli.add_arguments(p); "
            "sys.exit(cli.run(p.parse_args(sys.argv[2:])))"
        )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "aggregate", "--config", str(path),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(300):
            team = await rollup_hash(redis, "alpha", "d", DAY, "team")
            if team.get("alpha|requests") == 200:
                break
            await asyncio.sleep(0.1)
        assert team == {**team, "alpha|cost": 600, "alpha|requests": 200}
        assert await backlog(redis, ["alpha"]) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    assert proc.returncode == 0, err.decode()


async def _spawn_aggregate(path: Path) -> asyncio.subprocess.Process:
    code = (
        "import argparse, sys; from gateway.aggregator import cli; "
        "p = argparse.ArgumentParser(); cli.add_arguments(p); "
        "sys.exit(cli.run(p.parse_args(sys.argv[1:])))"
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--config", str(path), "--log-level", "WARNING",
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


# `spendgate aggregate` is a process of its own only against a Redis of the user's.
@pytest.mark.parametrize("redis", ["redis"], indirect=True)
async def test_aggregator_killed_mid_run_and_restarted_totals_exact(
    redis: Redis, real_redis_url: str, tmp_path: Path
) -> None:
    from tests.aggregator.test_consumer import expected, random_events, stored

    path = tmp_path / "gateway.yaml"
    config = CONFIG.format(url=db_url(real_redis_url, AGGREGATOR_DB), archive=tmp_path / "archive")
    path.write_text(config + "  batch_size: 100\n  claim_idle_s: 1\n")
    events = random_events(6000, seed=99)
    await produce(redis, events)
    teams = {"alpha", "beta", "gamma"}
    first = await _spawn_aggregate(path)
    try:
        for _ in range(600):  # until it is well under way
            applied = 0
            for t in teams:
                applied += (await rollup_hash(redis, t, "d", DAY, "team")).get(f"{t}|requests", 0)
            if applied >= 1000:
                break
            await asyncio.sleep(0.02)
    finally:
        first.kill()  # SIGKILL: no cleanup, whatever it had read stays pending
        await first.wait()
    assert await backlog(redis, teams) > 0
    second = await _spawn_aggregate(path)
    try:
        for _ in range(600):
            if await backlog(redis, teams) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), timeout=15) == 0
    assert await backlog(redis, teams) == 0
    totals = await stored(redis, teams)
    assert totals == expected(events)
