"""Redis memory of the ledger, measured on a real redis-server: bytes per spend event (the team's
stream entry plus its id in the settle idempotency set of its hour), and what one day of rollups
costs per team (daily and hourly rollup hashes, and anomaly detection's 5-minute fine buckets).

    .venv/bin/python loadtests/store_memory.py [--events 100000] [--teams 10]
        [--url redis://...] [--random-attributes]

Without --url it starts its own redis-server on a free port (no persistence); it FLUSHDBs the
database it uses. The events are aggregator_throughput.py's (a few projects, three models with
tiering to the cheapest, eight keys per team, one or two tags, cache hits, errors), spread over
the last 24 hours, and each is settled through the gateway's own settle script, as a request's
is. Then one aggregator applies them with the production defaults (FOCUS prices, anomaly fine
buckets), and every key's MEMORY USAGE is summed by kind. Each key keeps one project,
environment and workload, as a virtual key does (`--random-attributes`: drawn per event, the
worst case for the daily FOCUS charge lines, which grow with the distinct combinations of key,
model, deployment, project, environment, workload and tags a day sees). Memory per event comes from
`used_memory` before and after the settles; rollups do not grow with the events once every
combination of a day occurs, so they are reported per team and day, with their retention.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import rediskeys
from gateway.aggregator.consumer import Aggregator
from gateway.aggregator.rollups import SeriesSpec
from gateway.budgets.ledger import BudgetLedger
from gateway.config.model import AggregatorConfig, AnomaliesConfig
from gateway.store.connect import close_store, open_store
from gateway.types import SpendEvent
from loadtests.aggregator_throughput import PRICES, make_events
from loadtests.targets import redis_for

MB = 1024 * 1024
# What a key's name says it is (rediskeys), in the order they are tried.
KINDS = (
    (":events", "spend streams"),
    (":settled:", "settle idempotency sets"),
    (":line", "daily FOCUS charge lines"),
    (":r:d:", "daily rollups"),
    (":r:h:", "hourly rollups"),
    (":as:", "anomaly fine buckets"),
)


def attributed(events: list[SpendEvent]) -> list[SpendEvent]:
    """Each key's project, environment and workload fixed, as a virtual key's principal fixes
    them (aggregator_throughput draws them per event, which makes every FOCUS charge line of a
    day distinct: a worst case for the daily rollups, not what keys produce)."""
    out = []
    for e in events:
        rng = random.Random(f"{e.team}/{e.key_id}")
        out.append(
            replace(
                e,
                project=rng.choice(("search", "chat", "summaries", None)),
                environment=rng.choice(("prod", "staging")),
                workload=rng.choice(("online", "batch")),
            )
        )
    return out


def kind_of(key: str) -> str:
    return next((name for part, name in KINDS if part in key), "other")


async def used_memory(redis: object) -> int:
    info = await redis.info("memory")  # type: ignore[attr-defined]
    return int(info["used_memory"])


async def usage_by_kind(redis: object) -> dict[str, int]:
    """Every key's MEMORY USAGE (all of its elements sampled), summed by kind."""
    totals: dict[str, int] = defaultdict(int)
    async for key in redis.scan_iter(count=1000):  # type: ignore[attr-defined]
        name = key.decode()
        size = await redis.memory_usage(name, samples=0)  # type: ignore[attr-defined]
        totals[kind_of(name)] += int(size or 0)
    return dict(totals)


async def distinct_lines(redis: object) -> int:
    """FOCUS charge lines in the daily rollups: distinct values of their `<line>|<metric>`
    fields."""
    total = 0
    async for key in redis.scan_iter(match="*:r:d:*:line", count=1000):  # type: ignore[attr-defined]
        fields = await redis.hkeys(key)  # type: ignore[attr-defined]
        total += len({f.rsplit(b"|", 1)[0] for f in fields})
    return total


async def run(url: str, n: int, teams: int, random_attributes: bool) -> None:
    redis = await open_store(url)
    try:
        await redis.flushdb()
        # Yesterday, midnight to midnight (UTC): one calendar day of rollups per team.
        today_ms = int(time.time()) // 86400 * 86_400_000
        events = make_events(n, teams, hours=24, start_ms=today_ms - 86_400_000)
        if not random_attributes:
            events = attributed(events)
        version = (await redis.info("server"))["redis_version"]
        before = await used_memory(redis)
        ledger = BudgetLedger(redis)
        for i in range(0, n, 256):  # settled as the gateway settles: pipelined scripts
            chunk = events[i : i + 256]
            await asyncio.gather(*(ledger.settle(None, e.team, e.request_id, [], e) for e in chunk))
        settled = await used_memory(redis)
        kinds = await usage_by_kind(redis)
        per_event = (settled - before) / n
        stream = kinds.get("spend streams", 0) / n
        idem = kinds.get("settle idempotency sets", 0) / n
        mix = "drawn per event" if random_attributes else "fixed per key"
        print(f"Redis {version}: {n:,} events of {teams} teams over one day ({mix}), settled")
        print(f"  used_memory grew {(settled - before) / MB:.1f} MB: {per_event:.0f} B per event")
        print(f"    of which the stream entry {stream:.0f} B, its id in the settled set {idem:.0f}")
        print(f"  per million events: {per_event * 1e6 / MB:,.0f} MB")

        config = AggregatorConfig(batch_size=500, block_ms=10, claim_idle_s=3600)
        series = SeriesSpec.from_config(AnomaliesConfig())
        aggregator = Aggregator(redis, config, consumer="memory", prices=PRICES, series=series)
        await aggregator.refresh_streams()
        applied = 0
        while applied < n:
            applied += await aggregator.step()
        kinds = await usage_by_kind(redis)
        fine_days = AnomaliesConfig().seasonal_weeks * 7 + 1
        print("after the aggregator applied them (one calendar day of each team):")
        rows = (
            ("daily rollups", rediskeys.ROLLUP_DAILY_TTL_S // 86400),
            ("daily FOCUS charge lines", rediskeys.ROLLUP_DAILY_TTL_S // 86400),
            ("hourly rollups", rediskeys.ROLLUP_HOURLY_TTL_S // 86400),
            ("anomaly fine buckets", fine_days),
        )
        per_team_day = kept = 0.0
        for name, retention_days in rows:
            size = kinds.get(name, 0) / teams
            per_team_day += size
            kept += size * retention_days
            print(
                f"  {name}: {size / 1024:,.0f} KiB per team and day, kept {retention_days} days:"
                f" {size * retention_days / MB:,.1f} MB per team at steady state"
            )
        print(
            f"  one day of rollups: {per_team_day / 1024:,.0f} KiB per team; all kept: "
            f"{kept / MB:,.0f} MB per team"
        )
        lines = await distinct_lines(redis)
        size = kinds.get("daily FOCUS charge lines", 0)
        print(
            f"  charge lines: {lines / teams:,.0f} distinct per team and day, "
            f"{size / max(lines, 1):,.0f} B each"
        )
        await redis.flushdb()
    finally:
        await close_store(redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--url", help="an existing Redis (its db is flushed)")
    parser.add_argument(
        "--random-attributes",
        action="store_true",
        help="project, environment and workload drawn per event, not fixed per key",
    )
    args = parser.parse_args()
    with redis_for(args.url) as url:
        asyncio.run(run(url, args.events, args.teams, args.random_attributes))


if __name__ == "__main__":
    main()
