"""Rollups from Redis as the analytics functions take them (`RollupData`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import TYPE_CHECKING

from gateway.analytics.rollupdata import RollupData
from gateway.rollupformat import DAILY
from gateway.store.rollups import read_rollups

if TYPE_CHECKING:
    from redis.asyncio import Redis


async def load_rollups(
    redis: Redis,
    teams: Iterable[str],
    start: date,
    end: date,
    granularity: str = DAILY,
    dimensions: Sequence[str] | None = None,
) -> RollupData:
    """The rollups of `teams` for every bucket from `start` to `end` (inclusive, UTC days)."""
    hashes = await read_rollups(redis, teams, start, end, granularity, dimensions)
    return RollupData.from_hashes(granularity, start, end, hashes)
