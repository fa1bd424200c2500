"""Helpers for ledger tests: a private Redis database, spend events produced the way the settle
script does (XADD of `SpendEvent.to_fields()` to the team stream, SADD of the team into the
stream registry), and draining the streams with an aggregator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.consumer import Aggregator
from gateway.aggregator.prices import PriceList
from gateway.aggregator.rollups import increments
from gateway.analytics.rollupdata import RollupData
from gateway.config.model import AggregatorConfig
from gateway.store.connect import open_store
from gateway.types import SpendEvent
from tests.clock import T0_MS, FakeClock

AGGREGATOR_DB = 2  # the real-Redis database of tests/aggregator
REPORTS_DB = 3  # and of tests/reports


# Events are dated at T0 (tests.clock) and the aggregator's clock stands an hour later, so
# every rollup key lives; whatever today's date is.
NOW = FakeClock(T0_MS / 1000 + 3600)


def db_url(base: str, db: int) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{db}"))


async def open_db(base_url: str, db: int) -> Redis:
    redis = await open_store(db_url(base_url, db))
    await redis.flushdb()
    return redis


def event(n: int, **fields: object) -> SpendEvent:
    values: dict[str, object] = {
        "event_id": f"ev-{n}",
        "ts_ms": T0_MS,
        "team": "alpha",
        "request_id": f"req-{n}",
        "key_id": "key_000000000001",
        "project": "search",
        "environment": "prod",
        "workload": "chat",
        "requested_model": "gpt-4o",
        "served_model": "gpt-4o",
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_nano": 450_000,
        "list_cost_nano": 450_000,
    }
    values.update(fields)
    return SpendEvent(**values)  # type: ignore[arg-type]


def external_event(n: int, amount_nano: int, **fields: object) -> SpendEvent:
    """A posted external cost of `amount_nano`, as `event` builds a request's."""
    values: dict[str, object] = {
        "kind": "external",
        "requested_model": "",
        "served_model": "",
        "provider": "",
        "deployment": "",
        "key_id": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_nano": amount_nano,
        "list_cost_nano": amount_nano,
        "description": f"posted cost {n}",
    }
    values.update(fields)
    return event(n, **values)


async def produce(redis: Redis, events: Iterable[SpendEvent]) -> list[str]:
    ids: list[str] = []
    teams: set[str] = set()
    batch: list[SpendEvent] = []

    async def flush() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for e in batch:
                pipe.xadd(rediskeys.events_stream(e.team), e.to_fields())  # type: ignore[arg-type]
            ids.extend(i.decode() for i in await pipe.execute())
        batch.clear()

    for e in events:
        teams.add(e.team)
        batch.append(e)
        if len(batch) >= 1000:
            await flush()
    await flush()
    if teams:
        await redis.sadd(rediskeys.streams_registry(), *teams)
    return ids


async def produce_raw(redis: Redis, team: str, fields: Mapping[str, str]) -> str:
    entry_id = await redis.xadd(rediskeys.events_stream(team), dict(fields))  # type: ignore[arg-type]
    await redis.sadd(rediskeys.streams_registry(), team)
    return str(entry_id.decode())


async def backlog(redis: Redis, teams: Iterable[str]) -> int:
    """Entries not yet applied: pending plus never delivered, over the teams' streams."""
    total = 0
    for team in teams:
        stream = rediskeys.events_stream(team)
        for info in await redis.xinfo_groups(stream):
            total += int(info["pending"]) + int(info["lag"] or 0)
    return total


async def drain(
    redis: Redis, config: AggregatorConfig | None = None, clock: Callable[[], float] = NOW
) -> int:
    """Apply everything in every registered stream with one aggregator (on `clock`, by default
    an hour after T0); returns entries applied."""
    aggregator = Aggregator(
        redis, config or AggregatorConfig(block_ms=10), consumer="drain", clock=clock
    )
    total = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        applied = await aggregator.step()
        total += applied
        if applied == 0 and await backlog(redis, aggregator.teams) == 0:
            return total
    raise AssertionError("streams not drained within 30 s (entries pending to another consumer?)")


async def rollup_hash(
    redis: Redis, team: str, granularity: str, bucket: str, dimension: str
) -> dict[str, int]:
    raw = await redis.hgetall(rediskeys.rollup(team, granularity, bucket, dimension))
    return {k.decode(): int(v) for k, v in raw.items()}


def rollup_data(
    events: Iterable[SpendEvent],
    start: date,
    end: date,
    prices: PriceList | None = None,
    granularity: str = "d",
) -> RollupData:
    """The daily (or hourly, "h") RollupData the aggregator would produce from `events` (no
    Redis involved), its FOCUS lines priced from `prices`."""
    hashes: dict[tuple[str, str, str], dict[str, int]] = {}
    for e in events:
        for key, field, amount in increments(e, prices):
            # sg:{t:<team>}:r:<granularity>:<bucket>:<dimension>
            tag, rest = key.split("}:r:", 1)
            kind, bucket, dimension = rest.split(":", 2)
            if kind != granularity:
                continue
            cell = hashes.setdefault((tag.removeprefix("sg:{t:"), bucket, dimension), {})
            cell[field] = cell.get(field, 0) + amount
    return RollupData.from_hashes(granularity, start, end, hashes)


WEEK = (1.1, 1.15, 1.1, 1.05, 1.0, 0.45, 0.4)  # a weekday's share of a typical day, Monday first
HOURS = (2, 8)  # events of a history day come at 02:00 and 08:00 UTC, before T0's 10:30


def history(
    team: str,
    first: date,
    last: date,
    usd_per_day: float,
    *,
    seed: int = 0,
    noise: float = 0.05,
    **fields: object,
) -> list[SpendEvent]:
    """Request spend of `team` every day from `first` to `last` (inclusive): `usd_per_day` on
    an average weekday shaped by WEEK, with seeded noise, as two events a day."""
    import random
    from datetime import UTC, datetime, timedelta

    rng = random.Random(seed)
    out = []
    day = first
    while day <= last:
        usd = usd_per_day * WEEK[day.weekday()] * (1 + rng.gauss(0, noise))
        for hour in HOURS:
            ts = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            n = f"{team}-{day.isoformat()}-{hour}"
            cost = int(usd * 1e9 / len(HOURS))
            out.append(
                event(
                    0,
                    **{
                        "event_id": f"ev-{n}",
                        "request_id": f"req-{n}",
                        "team": team,
                        "ts_ms": int(ts.timestamp() * 1000),
                        "cost_nano": cost,
                        "list_cost_nano": cost,
                        **fields,
                    },
                )
            )
        day += timedelta(days=1)
    return out
