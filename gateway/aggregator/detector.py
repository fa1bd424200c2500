"""Anomaly detection as part of the aggregator: once per fine bucket, by one replica at a time.

The replica holding the lease (`rediskeys.anomaly_lease`, like the archive's) mirrors every
team's fine buckets in memory (`SeriesHistory`, loaded from Redis when it takes the lease and
once a day, then read a bucket or two at a time), evaluates each closed bucket after the cursor, in
order, with `gateway.analytics.detector`, sends the alerts, and commits the records, the
teams' state and the cursor in one MULTI. A bucket is closed once its end plus a grace
(half a bucket, at most 30 s) has passed on the injected clock, so that its events are
applied; events later than that still count in later baselines. Another replica takes over
from the cursor when the lease lapses. Alerts go out before the commit: a bucket re-run after
a crash gets the same anomaly ids, and the sender's cooldown (keyed by id and change) drops the
repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.aggregator.consumer import load_lua
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.analytics.anomaly import Anomaly, TeamState
from gateway.analytics.detector import Change, Pattern, TeamDetector
from gateway.analytics.series import SeriesHistory
from gateway.anomalies.alerts import send_change
from gateway.anomalies.records import AnomalyStore, Cursor
from gateway.slices import NO_SLICES, Slices

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from gateway.budgets.alerts import AlertSender
    from gateway.config.model import AnomaliesConfig

log = logging.getLogger("spendgate.aggregator.anomalies")

_LEASE_MIN_MS = 30_000
_MAX_GRACE_S = 30.0
_PIPELINE_CHUNK = 1000  # HGETALLs per round trip when loading history
_CATCH_UP_S = 3600  # after an outage, evaluate at most the last hour's buckets (or 12)
_DAY_S = 86_400


class AnomalyDetector:
    def __init__(
        self,
        redis: Redis,
        config: AnomaliesConfig,
        *,
        teams: Callable[[], Iterable[str]] = tuple,
        alerts: AlertSender | None = None,
        metrics: AggregatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        slices: Slices = NO_SLICES,
    ) -> None:
        """`teams`: the configured teams (every team with a spend stream is evaluated too).
        `clock`: the wall clock buckets close on; the loop's own timers are monotonic.
        `slices`: how a process of its own gives its core way between teams."""
        self.redis = redis
        self.slices = slices
        self.config = config  # reassignable: a reload takes effect on the next run
        self.teams = teams
        self.alerts = alerts
        self.metrics = metrics or AggregatorMetrics()
        self.clock = clock
        self.store = AnomalyStore(redis)
        self._lease: AsyncScript = redis.register_script(load_lua("lease.lua"))
        self._token = secrets.token_hex(8)
        self._held = False
        self._histories: dict[str, SeriesHistory] = {}
        self._detectors: dict[str, TeamDetector] = {}
        self._open: dict[str, dict[str, Anomaly]] = {}  # team -> kind -> open anomaly
        # (bucket_s, capacity, UTC day) of the mirror: it is read again each day, so that
        # history imported meanwhile (`spendgate import`) reaches the baselines.
        self._loaded: tuple[int, int, int] | None = None
        self._cursor: Cursor | None = None  # the last one this replica committed

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate buckets as they close until `stop` is set; store outages are logged and
        retried (the lease and the mirror are taken afresh)."""
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except _LeaseLost:
                    log.warning("anomaly detection: lost the lease; another replica runs it")
                except (RedisError, OSError) as exc:
                    log.warning("anomaly detection: store unavailable (%s); retrying", exc)
                    self._drop_lease()
                tick = min(1.0, self.config.bucket_s / 4)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick)
        finally:
            if self._held:
                with contextlib.suppress(RedisError, OSError):
                    await self._lease(keys=[rediskeys.anomaly_lease()], args=[self._token])

    async def run_once(self) -> int:
        """Evaluate every closed bucket after the cursor, if this replica holds (or can take)
        the lease. Returns how many buckets it evaluated."""
        config = self.config
        if not config.enabled or not await self._take_lease(config):
            self._clear_gauges()
            return 0
        now = self.clock()
        last = closed_bucket(now, config.bucket_s)
        cursor, states = await self.store.load_state()
        if self._loaded != _mirror(config, last) or cursor != self._cursor:
            # New to the lease, another replica ran, a new day or a new bucket size.
            await self._load(config, last, states)
        start = last
        if cursor is not None and cursor.bucket_s == config.bucket_s:
            start = max(cursor.bucket + 1, last - max(12, _CATCH_UP_S // config.bucket_s))
        if start > last:
            return 0
        await self._refresh(config, start - 1, last, states)
        feedback = await self.store.feedback()
        suppress = await self.store.suppressing(now - config.expected_suppress_s)
        for n in range(start, last + 1):
            changes = self._evaluate(n, states, suppress, now)
            if self.alerts is not None:
                for change in changes:
                    await send_change(self.alerts, change, feedback.get(change.anomaly.id))
            touched = {a.id: a for kinds in self._open.values() for a in kinds.values()}
            touched.update({c.anomaly.id: c.anomaly for c in changes})
            # The metrics first: whoever sees the commit (a reader of the cursor) sees them too.
            for change in changes:
                if change.event == "opened":
                    self.metrics.detection_lag.observe(now - change.anomaly.start_s)
                    log.info("anomaly %s opened (%s)", change.anomaly.id, change.anomaly.severity)
            self._set_gauges()
            self._cursor = Cursor(config.bucket_s, n)
            await self.store.commit(self._cursor, states, touched.values())
            await self._renew(config)
        if (last * config.bucket_s) // _DAY_S != ((start - 1) * config.bucket_s) // _DAY_S:
            await self.store.forget_before(now - rediskeys.ANOMALY_RETENTION_S)
        self.metrics.evaluated.set((last + 1) * config.bucket_s)
        self._set_gauges()
        return last - start + 1

    def _evaluate(
        self, n: int, states: dict[str, TeamState], suppress: dict[Pattern, str], now: float
    ) -> list[Change]:
        changes: list[Change] = []
        for team, detector in sorted(self._detectors.items()):
            self.slices.give_way()
            state = states.setdefault(team, TeamState())
            open_anomalies = self._open.setdefault(team, {})
            changes += detector.evaluate(n, state, open_anomalies, suppress, now)
        return changes

    async def _load(self, config: AnomaliesConfig, last: int, states: dict[str, TeamState]) -> None:
        """Mirror every team's kept buckets, and load the anomalies open."""
        self._histories.clear()
        self._detectors.clear()
        self._loaded = _mirror(config, last)
        await self._refresh(config, last - config.history_buckets + 1, last, states)
        ids = [i for s in states.values() for i in s.open.values()]
        records = await self.store.load(ids)
        self._open = {}
        for team, state in states.items():
            kinds = {k: records[i] for k, i in state.open.items() if i in records}
            state.open = {k: a.id for k, a in kinds.items()}
            self._open[team] = kinds
        log.info(
            "anomaly detection: this replica runs it now (%d teams, %d buckets of %d s kept)",
            len(self._histories),
            config.history_buckets,
            config.bucket_s,
        )

    async def _refresh(
        self, config: AnomaliesConfig, first: int, last: int, states: dict[str, TeamState]
    ) -> None:
        """Read buckets first..last of every team into the mirror."""
        teams = await self._team_names(states)
        for team in teams:
            history = self._histories.get(team)
            if history is None:
                history = self._histories[team] = SeriesHistory(
                    config.bucket_s, config.history_buckets
                )
            detector = self._detectors.get(team)
            if detector is None or detector.config is not config:  # new, or a reload
                self._detectors[team] = TeamDetector(team, history, config)
        wanted = [(t, n) for t in teams for n in range(first, last + 1)]
        for i in range(0, len(wanted), _PIPELINE_CHUNK):
            chunk = wanted[i : i + _PIPELINE_CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for team, n in chunk:
                    start_s = n * config.bucket_s
                    pipe.hgetall(rediskeys.anomaly_series(team, config.bucket_s, start_s))
                replies = await pipe.execute()
            for (team, n), raw in zip(chunk, replies, strict=True):
                if raw or self._histories[team].newest is not None:
                    self._histories[team].put(n, {_text(k): int(v) for k, v in raw.items()})
            await self._renew(config)

    async def _team_names(self, states: dict[str, TeamState]) -> list[str]:
        registered = {_text(t) for t in await self.redis.smembers(rediskeys.streams_registry())}
        return sorted(registered | set(self.teams()) | set(states))

    async def _take_lease(self, config: AnomaliesConfig) -> bool:
        key, ttl = rediskeys.anomaly_lease(), _lease_ms(config)
        if self._held:
            if await self._lease(keys=[key], args=[self._token, ttl]):
                return True
            log.warning("anomaly detection: lost the lease; another replica runs it")
            self._drop_lease()
        if await self.redis.set(key, self._token, nx=True, px=ttl):
            self._held = True
            self._loaded = None
            return True
        return False

    async def _renew(self, config: AnomaliesConfig) -> None:
        if self._held and not await self._lease(
            keys=[rediskeys.anomaly_lease()], args=[self._token, _lease_ms(config)]
        ):
            self._drop_lease()
            raise _LeaseLost

    def _drop_lease(self) -> None:
        self._held = False
        self._loaded = None
        self._cursor = None

    def _set_gauges(self) -> None:
        self.metrics.anomalies_open.clear()
        for team, kinds in self._open.items():
            for anomaly in kinds.values():
                self.metrics.anomalies_open.labels(team, anomaly.severity).inc()

    def _clear_gauges(self) -> None:
        self.metrics.anomalies_open.clear()
        self.metrics.evaluated.set(0)


class _LeaseLost(RedisError):
    """Another replica took the lease mid-run: stop, and leave the rest to it."""


def closed_bucket(now: float, bucket_s: int) -> int:
    """The newest bucket whose end, plus the grace its late events get, has passed."""
    grace = min(bucket_s / 2, _MAX_GRACE_S)
    return math.floor((now - grace) / bucket_s) - 1


def _mirror(config: AnomaliesConfig, last: int) -> tuple[int, int, int]:
    return config.bucket_s, config.history_buckets, last * config.bucket_s // _DAY_S


def _lease_ms(config: AnomaliesConfig) -> int:
    return max(_LEASE_MIN_MS, 3 * config.bucket_s * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
