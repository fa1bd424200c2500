"""Reading rollup hashes from Redis into `RollupData` for the analytics functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from gateway import rediskeys
from gateway.analytics.rollupdata import RollupData, day_bucket, days
from gateway.rollupformat import DAILY, DIMENSIONS, HOURLY, HOURLY_DIMENSIONS

if TYPE_CHECKING:
    from redis.asyncio import Redis

_PIPELINE_CHUNK = 2000  # HGETALLs per round trip


async def load_rollups(
    redis: Redis,
    teams: Iterable[str],
    start: date,
    end: date,
    granularity: str = DAILY,
    dimensions: Sequence[str] | None = None,
) -> RollupData:
    """The rollups of `teams` for every bucket from `start` to `end` (inclusive, UTC days)."""
    if granularity not in (DAILY, HOURLY):
        raise ValueError(f"granularity must be {DAILY!r} or {HOURLY!r}, not {granularity!r}")
    default = DIMENSIONS if granularity == DAILY else HOURLY_DIMENSIONS
    dims = tuple(dimensions or default)
    buckets = _buckets(granularity, start, end)
    idents = [(t, b, d) for t in sorted(set(teams)) for b in buckets for d in dims]
    hashes: dict[tuple[str, str, str], dict[str, int]] = {}
    for i in range(0, len(idents), _PIPELINE_CHUNK):
        chunk = idents[i : i + _PIPELINE_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for team, bucket, dim in chunk:
                pipe.hgetall(rediskeys.rollup(team, granularity, bucket, dim))
            replies = await pipe.execute()
        for ident, raw in zip(chunk, replies, strict=True):
            if raw:
                hashes[ident] = {_text(k): int(v) for k, v in raw.items()}
    return RollupData.from_hashes(granularity, start, end, hashes)


async def known_teams(redis: Redis, configured: Iterable[str]) -> list[str]:
    """Configured teams and every team with a spend stream (a team removed from the config
    still has spend to report)."""
    registered = {_text(t) for t in await redis.smembers(rediskeys.streams_registry())}
    return sorted(registered | set(configured))


def _buckets(granularity: str, start: date, end: date) -> list[str]:
    if granularity == DAILY:
        return [day_bucket(d) for d in days(start, end)]
    first = datetime(start.year, start.month, start.day)
    hours = ((end - start).days + 1) * 24
    return [(first + timedelta(hours=h)).strftime("%Y%m%d%H") for h in range(hours)]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
