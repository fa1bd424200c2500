"""Reading rollup hashes out of Redis, for whoever reads the ledger: the reports and the
aggregator's own forecasts. The hashes come back raw ("<value>|<metric>" -> amount, as
`gateway.rollupformat` writes them); `analytics.rollupdata.RollupData.from_hashes` reads them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from gateway import rediskeys
from gateway.rollupformat import DAILY, DIMENSIONS, HOURLY, HOURLY_DIMENSIONS

if TYPE_CHECKING:
    from redis.asyncio import Redis

Hashes = dict[tuple[str, str, str], dict[str, int]]  # (team, bucket, dimension) -> field -> sum

_PIPELINE_CHUNK = 2000  # HGETALLs per round trip


async def read_rollups(
    redis: Redis,
    teams: Iterable[str],
    start: date,
    end: date,
    granularity: str = DAILY,
    dimensions: Sequence[str] | None = None,
) -> Hashes:
    """The non-empty rollups of `teams` for every bucket from `start` to `end` (inclusive, UTC
    days) and every dimension asked for (default: all of the granularity's)."""
    if granularity not in (DAILY, HOURLY):
        raise ValueError(f"granularity must be {DAILY!r} or {HOURLY!r}, not {granularity!r}")
    default = DIMENSIONS if granularity == DAILY else HOURLY_DIMENSIONS
    dims = tuple(dimensions or default)
    buckets = _buckets(granularity, start, end)
    idents = [(t, b, d) for t in sorted(set(teams)) for b in buckets for d in dims]
    hashes: Hashes = {}
    for i in range(0, len(idents), _PIPELINE_CHUNK):
        chunk = idents[i : i + _PIPELINE_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for team, bucket, dim in chunk:
                pipe.hgetall(rediskeys.rollup(team, granularity, bucket, dim))
            replies = await pipe.execute()
        for ident, raw in zip(chunk, replies, strict=True):
            if raw:
                hashes[ident] = {_text(k): int(v) for k, v in raw.items()}
    return hashes


async def known_teams(redis: Redis, configured: Iterable[str]) -> list[str]:
    """Configured teams and every team with a spend stream (a team removed from the config
    still has spend to report)."""
    registered = {_text(t) for t in await redis.smembers(rediskeys.streams_registry())}
    return sorted(registered | set(configured))


def _buckets(granularity: str, start: date, end: date) -> list[str]:
    count = (end - start).days + 1
    if granularity == DAILY:
        return [(start + timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]
    first = datetime(start.year, start.month, start.day)
    return [(first + timedelta(hours=h)).strftime("%Y%m%d%H") for h in range(count * 24)]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
