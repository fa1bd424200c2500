"""Events per second one aggregator sustains: pre-load spend events, time one consumer draining.

    .venv/bin/python loadtests/aggregator_throughput.py [--events 50000] [--teams 4]
        [--batch-size 500] [--url redis://127.0.0.1:6379/9 | memory://] [--no-uvloop]
        [--anomalies on|off|both] [--rounds N] [--uniform]

Without --url it starts its own redis-server on a free port (no persistence). It FLUSHDBs the
database it uses. Events look like production traffic: a few projects, models, deployments and
keys per team, one or two tags, a mix of cache hits, tiering savings and errors, spread over
three hours; `--uniform`: one key's requests to one model within one hour, each a different
request (the load test's traffic). Reports the drain rate, the apply-script share of the time,
Redis's own CPU and its time per apply-script call, and checks the rolled-up cost against the
sum of the events (to the nano). `--anomalies` writes the
fine buckets anomaly detection reads (5-minute, as by default) with the rollups, or not; `both`
alternates the two in each of `--rounds` rounds, so the machine's noise hits both alike, and
prints the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import rediskeys
from gateway.aggregator.consumer import Aggregator
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.aggregator.prices import PriceList, SkuPrice
from gateway.aggregator.rollups import SeriesSpec
from gateway.config.model import AggregatorConfig, AnomaliesConfig
from gateway.pricing.table import load_price_table
from gateway.rollupformat import hour_bucket
from gateway.store.connect import close_store, open_store
from gateway.types import SpendEvent
from loadtests.targets import redis_for

MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini")
PRICES = PriceList(
    {(f"openai/{m}", m): SkuPrice(load_price_table()[m], load_price_table()[m]) for m in MODELS}
)


def make_events(
    n: int, teams: int, seed: int = 1, hours: int = 3, start_ms: int | None = None
) -> list[SpendEvent]:
    """`n` events of `teams` teams spread over `hours` hours from `start_ms` (default: the
    last `hours` hours)."""
    rng = random.Random(seed)
    if start_ms is None:
        start_ms = int(time.time() * 1000) - hours * 3_600_000
    models = [("gpt-4o", 2_500, 10_000), ("gpt-4o-mini", 150, 600), ("o3-mini", 1_100, 4_400)]
    events = []
    for i in range(n):
        team = f"team{i % teams:02d}"
        model, price_in, price_out = rng.choice(models)
        prompt, completion = rng.randrange(50, 4000), rng.randrange(10, 800)
        cost = (prompt * price_in + completion * price_out) // 1000 * 1000
        hit = rng.random() < 0.1
        tiered = not hit and model != "gpt-4o-mini" and rng.random() < 0.2
        events.append(
            SpendEvent(
                event_id=f"ev-{i}",
                ts_ms=start_ms + rng.randrange(0, hours * 3_600_000),
                team=team,
                request_id=f"req-{i}",
                key_id=f"key_{rng.randrange(8):012x}",
                project=rng.choice(("search", "chat", "summaries", None)),
                environment=rng.choice(("prod", "staging")),
                workload=rng.choice(("online", "batch")),
                tags={"exp": f"e{rng.randrange(5)}"}
                | ({"run": str(rng.randrange(3))} if rng.random() < 0.3 else {}),
                requested_model=model,
                served_model="gpt-4o-mini" if tiered else model,
                provider="openai",
                deployment=f"openai/{'gpt-4o-mini' if tiered else model}",
                prompt_tokens=prompt,
                cached_prompt_tokens=prompt // 2 if rng.random() < 0.3 else 0,
                completion_tokens=completion,
                cost_nano=0 if hit else (cost // 10 if tiered else cost),
                list_cost_nano=cost,
                optimization="cache" if hit else ("tiering" if tiered else None),
                cache="hit" if hit else "miss",
                status=429 if rng.random() < 0.01 else 200,
                latency_ms=rng.uniform(100, 3000),
            )
        )
    return events


def uniform_events(n: int, start_ms: int | None = None) -> list[SpendEvent]:
    """`n` requests of one key of one team to one model within one hour, each a different
    request (its own fingerprint, as the load test's bodies are): the traffic of one
    application, and the load test's. Every batch adds to the same rollup fields."""
    if start_ms is None:
        start_ms = int(time.time() * 1000) // 3_600_000 * 3_600_000
    return [
        SpendEvent(
            event_id=f"ev-{i}",
            ts_ms=start_ms + i % 3_600_000,
            team="team00",
            request_id=f"req-{i}",
            key_id="key_000000000001",
            project="search",
            environment="prod",
            workload="online",
            tags={"cost_center": "cc-1001"},
            requested_model="gpt-4o-mini",
            served_model="gpt-4o-mini",
            provider="openai",
            deployment="openai/gpt-4o-mini",
            prompt_tokens=31 + i % 7,
            completion_tokens=16,
            cost_nano=14_250 + 150 * (i % 7),
            list_cost_nano=14_250 + 150 * (i % 7),
            cache="bypass",
            latency_ms=2.0,
            fingerprint=f"{i:016x}",
            shape="simple",
        )
        for i in range(n)
    ]


async def preload(redis: object, events: list[SpendEvent]) -> None:
    r = redis  # redis.asyncio.Redis
    for i in range(0, len(events), 2000):
        async with r.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            for e in events[i : i + 2000]:
                pipe.xadd(rediskeys.events_stream(e.team), e.to_fields())
            await pipe.execute()
    await r.sadd(rediskeys.streams_registry(), *{e.team for e in events})  # type: ignore[attr-defined]


async def redis_cpu_s(redis: object) -> float | None:
    try:
        info = await redis.info("cpu")  # type: ignore[attr-defined]
    except Exception:  # fakeredis has no CPU section
        return None
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def script_time(redis: object) -> tuple[int, float] | None:
    """EVALSHA calls and their microseconds inside Redis so far (INFO commandstats)."""
    try:
        stats = await redis.info("commandstats")  # type: ignore[attr-defined]
    except Exception:  # fakeredis keeps no command statistics
        return None
    evalsha = stats.get("cmdstat_evalsha") or {"calls": 0, "usec": 0}
    return int(evalsha["calls"]), float(evalsha["usec"])


async def run(
    url: str, n: int, teams: int, batch_size: int, anomalies: bool, uniform: bool = False
) -> tuple[float, float]:
    """One drain; returns (events per second, events per second of the aggregator's CPU)."""
    redis = await open_store(url)
    try:
        await redis.flushdb()
        events = uniform_events(n) if uniform else make_events(n, teams)
        t0 = time.perf_counter()
        await preload(redis, events)
        print(f"pre-loaded {n} events over {teams} team streams in {time.perf_counter() - t0:.1f}s")
        metrics = AggregatorMetrics()
        config = AggregatorConfig(batch_size=batch_size, block_ms=10, claim_idle_s=3600)
        # Priced like production: the FOCUS lines carry each deployment's prices.
        series = SeriesSpec.from_config(AnomaliesConfig()) if anomalies else None
        aggregator = Aggregator(
            redis, config, consumer="bench", metrics=metrics, prices=PRICES, series=series
        )
        await aggregator.refresh_streams()
        cpu0, redis0 = resource.getrusage(resource.RUSAGE_SELF), await redis_cpu_s(redis)
        script0 = await script_time(redis)
        started = time.perf_counter()
        applied = 0
        while applied < n:
            applied += await aggregator.step()
        elapsed = time.perf_counter() - started
        cpu1, redis1 = resource.getrusage(resource.RUSAGE_SELF), await redis_cpu_s(redis)
        own_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        apply_s = metrics.apply_seconds._sum.get()
        batches = int(metrics.batches._value.get())
        print(
            f"drained {applied} events in {elapsed:.2f}s: {applied / elapsed:,.0f} events/s "
            f"({batches} batches of <= {batch_size}, {url.split('://')[0]}://, "
            f"anomaly series {'on' if anomalies else 'off'})"
        )
        print(f"  aggregator process CPU {own_cpu:.2f}s; apply (sum + script) {apply_s:.2f}s")
        if redis0 is not None and redis1 is not None:
            print(f"  redis-server CPU {redis1 - redis0:.2f}s")
        script1 = await script_time(redis)
        if script0 is not None and script1 is not None and script1[0] > script0[0]:
            calls, usec = script1[0] - script0[0], script1[1] - script0[1]
            print(f"  in Redis, {usec / calls:,.0f} us per apply script call ({calls} calls)")
        rolled = 0
        for team in sorted({e.team for e in events}):
            buckets = sorted({hour_bucket(e.ts_ms)[:8] for e in events if e.team == team})
            for day in buckets:
                key = rediskeys.rollup(team, "d", day, "team")
                rolled += int(await redis.hget(key, f"{team}|cost") or 0)
        expected = sum(e.cost_nano for e in events)
        status = "exact" if rolled == expected else f"MISMATCH (expected {expected})"
        print(f"  rolled-up cost {rolled} nano: {status}")
        if anomalies:
            keys = [k async for k in redis.scan_iter(match="sg:*:as:*", count=1000)]
            print(f"  {len(keys)} fine buckets written for anomaly detection")
        await redis.flushdb()
        return applied / elapsed, applied / own_cpu
    finally:
        await close_store(redis)


async def rounds(url: str, args: argparse.Namespace) -> None:
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.anomalies]
    rates: dict[bool, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for i in range(args.rounds):
        for mode in modes if i % 2 == 0 else modes[::-1]:  # ABBA: neither side always first
            rates[mode].append(
                await run(url, args.events, args.teams, args.batch_size, mode, args.uniform)
            )
    if len(rates) == 2 and args.rounds > 1:
        for what, i in (("events/s", 0), ("events per CPU-second", 1)):
            off, on = (statistics.median(r[i] for r in rates[m]) for m in (False, True))
            rounds_text = "; ".join(
                f"{name} " + ", ".join(f"{r[i]:,.0f}" for r in rates[m])
                for name, m in (("off", False), ("on", True))
            )
            print(
                f"median over {args.rounds} rounds, {what}: off {off:,.0f}, on {on:,.0f} "
                f"({100 * (on / off - 1):+.1f} %) [{rounds_text}]"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--url", help="an existing Redis (its db is flushed), or memory://")
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    parser.add_argument(
        "--anomalies",
        choices=("on", "off", "both"),
        default="on",
        help="write the fine buckets of anomaly detection (both: alternate, compare)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repetitions (with --anomalies both)")
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="one key's requests to one model in one hour (the load test's traffic), not a mix",
    )
    args = parser.parse_args()
    with redis_for(args.url) as url:
        main_coro = rounds(url, args)
        if args.no_uvloop:
            asyncio.run(main_coro)
        else:
            import uvloop

            uvloop.run(main_coro)


if __name__ == "__main__":
    main()
