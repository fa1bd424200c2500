"""The weekly review from the store: reads the daily rollups, the budgets in force and the
week's anomalies, and hands them to the pure `analytics.review`. What the review report (CLI and
admin API) and the aggregator's scheduled digest both use, so that a digest and the report it
summarizes say the same thing; the scorecard counts its anomalies with the same function.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from gateway import rediskeys
from gateway.analytics.review import Review, review
from gateway.analytics.rollupdata import RollupData
from gateway.analytics.scorecard import AnomalyCounts
from gateway.anomalies.records import AnomalyStore
from gateway.recommending import load_opportunities
from gateway.rollupformat import DAILY
from gateway.store.rollups import known_teams, read_rollups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

DIMENSIONS = ("team", "project", "key", "tag")  # the team's, and its budgets' scopes
RECOMMENDATION_DAYS = 30


async def anomaly_counts(redis: Redis, start: date, end: date) -> dict[str, AnomalyCounts]:
    """Per team: anomalies that started from `start` to `end` (inclusive UTC days), and how
    many of them people marked real / expected."""
    first = midnight(start)
    after = midnight(end + timedelta(days=1))
    listed = await AnomalyStore(redis).list(first, until_s=after)
    counts: dict[str, list[int]] = {}
    for x in listed:
        if not first <= x.anomaly.start_s < after:
            continue  # still open, started before
        c = counts.setdefault(x.anomaly.team, [0, 0, 0])
        c[0] += 1
        verdict = x.feedback.verdict if x.feedback else None
        c[1] += verdict == "real"
        c[2] += verdict == "expected"
    return {team: AnomalyCounts(*c) for team, c in counts.items()}


async def build_review(
    config: Config, redis: Redis, registry: BudgetRegistry, monday: date
) -> Review:
    """The review of the ISO week starting `monday`. Raises RedisError / OSError."""
    sunday = monday + timedelta(days=6)
    first = min((monday - timedelta(days=7)).replace(day=1), monday - timedelta(days=7))
    last = sunday + timedelta(days=6)  # a weekly budget's week is whole
    teams = await known_teams(redis, config.teams)
    await registry.refresh()
    hashes = await read_rollups(redis, teams, first, last, DAILY, DIMENSIONS)
    data = RollupData.from_hashes(DAILY, first, last, hashes)
    # The recommendations of the 30 days up to the week's end: what a month of it saves.
    found = await load_opportunities(
        config, redis, sunday - timedelta(days=RECOMMENDATION_DAYS - 1), sunday, registry.all()
    )
    return review(
        monday,
        data,
        config.teams,
        registry.all(),
        await anomaly_counts(redis, monday, sunday),
        found,
    )


async def reviewed_weeks(redis: Redis) -> dict[str, float]:
    """ISO week -> when the aggregator posted its review digests (`aggregator.reviews`)."""
    raw = await redis.hgetall(rediskeys.review_digests())
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
