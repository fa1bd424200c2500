"""Anomalies in the store: their records, the detector's state, and people's feedback, all in
one slot (`rediskeys.anomaly_*`). The detector commits a bucket's changes (records, state and
its cursor) in one MULTI; the admin API and the CLI read records and write feedback, which is
kept apart from the record so that it never races the detector's update of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from gateway import rediskeys
from gateway.analytics.anomaly import Anomaly, Feedback, TeamState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.analytics.detector import Pattern

_CURSOR = "_cursor"


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last bucket evaluated, and the bucket size it was numbered with."""

    bucket_s: int
    bucket: int

    def text(self) -> str:
        return f"{self.bucket_s}:{self.bucket}"

    @classmethod
    def parse(cls, raw: object) -> Cursor | None:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        size, _, bucket = text.partition(":")
        try:
            return cls(int(size), int(bucket))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Listed:
    anomaly: Anomaly
    feedback: Feedback | None


class AnomalyStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def load_state(self) -> tuple[Cursor | None, dict[str, TeamState]]:
        raw = await self.redis.hgetall(rediskeys.anomaly_state())
        cursor = None
        states: dict[str, TeamState] = {}
        for key, value in raw.items():
            name = _text(key)
            if name == _CURSOR:
                cursor = Cursor.parse(value)
            else:
                states[name] = TeamState.from_dict(orjson.loads(value))
        return cursor, states

    async def load(self, ids: Iterable[str]) -> dict[str, Anomaly]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        raw = await self.redis.hmget(rediskeys.anomaly_records(), wanted)
        return {
            anomaly_id: Anomaly.from_dict(orjson.loads(value))
            for anomaly_id, value in zip(wanted, raw, strict=True)
            if value is not None
        }

    async def commit(
        self, cursor: Cursor, states: dict[str, TeamState], anomalies: Iterable[Anomaly]
    ) -> None:
        """A bucket's outcome, atomically: the records it changed, every team's state and the
        cursor. A crash before it re-runs the bucket (same ids, so the same records)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            state = {team: orjson.dumps(s.to_dict()) for team, s in states.items()}
            state[_CURSOR] = cursor.text().encode()
            pipe.hset(rediskeys.anomaly_state(), mapping=state)  # type: ignore[arg-type]
            records = {a.id: orjson.dumps(a.to_dict()) for a in anomalies}
            if records:
                pipe.hset(rediskeys.anomaly_records(), mapping=records)  # type: ignore[arg-type]
                index = {a.id: a.start_s * 1000 for a in anomalies}
                pipe.zadd(rediskeys.anomaly_index(), index)
            await pipe.execute()

    async def get(self, anomaly_id: str) -> Listed | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(rediskeys.anomaly_records(), anomaly_id)
            pipe.hget(rediskeys.anomaly_feedback(), anomaly_id)
            record, feedback = await pipe.execute()
        if record is None:
            return None
        return Listed(Anomaly.from_dict(orjson.loads(record)), _feedback(feedback))

    async def list(
        self, since_s: float, *, team: str | None = None, until_s: float | None = None
    ) -> list[Listed]:
        """Anomalies that started since `since_s` (or are still open), newest first."""
        ids = await self.redis.zrevrangebyscore(
            rediskeys.anomaly_index(),
            "+inf" if until_s is None else int(until_s * 1000),
            int(since_s * 1000),
        )
        _, states = await self.load_state()
        still_open = {i for s in states.values() for i in s.open.values()}
        wanted = {_text(i) for i in ids} | still_open
        if not wanted:
            return []
        ordered = sorted(wanted)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(rediskeys.anomaly_records(), ordered)
            pipe.hmget(rediskeys.anomaly_feedback(), ordered)
            records, feedback = await pipe.execute()
        listed = [
            Listed(Anomaly.from_dict(orjson.loads(record)), _feedback(given))
            for record, given in zip(records, feedback, strict=True)
            if record is not None
        ]
        listed = [x for x in listed if team is None or x.anomaly.team == team]
        listed.sort(key=lambda x: (-x.anomaly.start_s, x.anomaly.id))
        return listed

    async def set_feedback(self, anomaly_id: str, feedback: Feedback) -> Listed | None:
        """Record a person's verdict (the latest one counts); None if there is no such
        anomaly."""
        if not await self.redis.hexists(rediskeys.anomaly_records(), anomaly_id):
            return None
        await self.redis.hset(
            rediskeys.anomaly_feedback(), anomaly_id, orjson.dumps(feedback.to_dict())
        )
        return await self.get(anomaly_id)

    async def feedback(self) -> dict[str, Feedback]:
        raw = await self.redis.hgetall(rediskeys.anomaly_feedback())
        return {_text(k): Feedback.from_dict(orjson.loads(v)) for k, v in raw.items()}

    async def suppressing(self, since_s: float) -> dict[Pattern, str]:
        """Patterns of anomalies marked `expected` since `since_s` -> the anomaly's id."""
        marked = [
            anomaly_id
            for anomaly_id, given in (await self.feedback()).items()
            if given.verdict == "expected" and given.at_s >= since_s
        ]
        patterns: dict[Pattern, str] = {}
        for anomaly in (await self.load(marked)).values():
            pattern = anomaly.pattern()
            if pattern is not None:
                patterns[pattern] = anomaly.id
        return patterns

    async def forget_before(self, before_s: float) -> int:
        """Drop records (and their feedback) that started before `before_s`."""
        old = await self.redis.zrangebyscore(rediskeys.anomaly_index(), "-inf", before_s * 1000)
        if not old:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(rediskeys.anomaly_records(), *old)
            pipe.hdel(rediskeys.anomaly_feedback(), *old)
            pipe.zrem(rediskeys.anomaly_index(), *old)
            await pipe.execute()
        return len(old)


def _feedback(raw: object) -> Feedback | None:
    if raw is None:
        return None
    return Feedback.from_dict(orjson.loads(raw))  # type: ignore[arg-type]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
