"""The weekly review digest, on the aggregator side: once `alerts.review`'s moment of the week
(a weekday and an hour, UTC) has passed, one aggregator replica (under a lease) builds the
review of the last complete ISO week (`gateway.reviewing`, what `spendgate report review`
shows) and posts one digest per team to the webhooks subscribed to `review`. The week is then
marked done in the store, so replicas and restarts post it once; a digest missed while no
aggregator ran is posted when one comes back, for the latest week due only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.analytics.review import digest_text, week_label
from gateway.reviewing import build_review

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.alerts import AlertSender
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config, ReviewSchedule

log = logging.getLogger("spendgate.aggregator.reviews")

REVIEW = "review"  # the alert kind (and webhook event)
CHECK_S = 300.0  # how often a replica looks whether a week's digest is due
_HOLD_S = 8 * 86_400.0  # a team's digest of a week is claimed past the next one's
_KEEP_S = 400 * 86_400  # the record of weeks reviewed, as long as the daily rollups


def due_week(schedule: ReviewSchedule, now: datetime) -> date:
    """Monday of the week whose digest is due by `now`: the last complete week before the
    latest scheduled moment that has passed."""
    monday = now.date() - timedelta(days=now.weekday())
    moment = datetime(monday.year, monday.month, monday.day, schedule.hour, tzinfo=UTC)
    if moment + timedelta(days=schedule.weekday) > now:
        monday -= timedelta(days=7)
    return monday - timedelta(days=7)


class ReviewDigests:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        sender: AlertSender,
        registry: BudgetRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the wall clock (epoch seconds) weeks and the schedule are read on."""
        self.redis = redis
        self.config = config
        self.sender = sender
        self.registry = registry
        self.clock = clock

    def set_config(self, config: Config) -> None:
        self.config = config
        self.registry.set_config_rules(config.budgets.rules)

    async def check(self) -> list[str]:
        """Post the due week's digests if nobody has; returns the teams this call posted to."""
        schedule = self.config.alerts.review
        if schedule is None:
            return []
        monday = due_week(schedule, datetime.fromtimestamp(self.clock(), UTC))
        week = week_label(monday)
        if await self.redis.hexists(rediskeys.review_digests(), week):
            return []
        token = secrets.token_hex(8)
        lease_ms = int(CHECK_S * 1000)
        if not await self.redis.set(rediskeys.review_lease(), token, nx=True, px=lease_ms):
            return []  # another replica is posting them
        result = await build_review(self.config, self.redis, self.registry, monday)
        posted = []
        for team in result.teams:
            fields = {
                "team": team.team,
                "week": week,
                "spend_usd": team.to_dict()["cost_usd"],
                "previous_usd": team.to_dict()["previous_usd"],
                "anomalies": team.anomalies.opened,
            }
            text = digest_text(team, result)
            subject = f"{team.team}:{week}"
            if await self.sender.send(REVIEW, subject, text, fields, hold_s=_HOLD_S, color="good"):
                posted.append(team.team)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(rediskeys.review_digests(), week, str(int(self.clock())))
            pipe.expire(rediskeys.review_digests(), _KEEP_S)
            pipe.delete(rediskeys.review_lease())  # done: a later week need not wait for it
            await pipe.execute()
        return posted

    async def run(self, stop: asyncio.Event) -> None:
        """Check every CHECK_S until `stop` is set; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.check()
            except (RedisError, OSError) as exc:
                log.warning("weekly review digests not posted (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CHECK_S)
