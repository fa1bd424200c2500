"""Anomaly detection as the aggregator runs it, against a real Redis, on an injected clock: one
replica at a time evaluates each closed bucket once, in order; the records, the teams' state
and the cursor are in the store, so another replica takes over where the first stopped; an
alert is posted once per change even when a bucket is evaluated again after a crash."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.detector import AnomalyDetector, closed_bucket
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.anomalies.alerts import ANOMALY
from gateway.anomalies.records import AnomalyStore
from gateway.budgets.alerts import AlertSender
from gateway.config.model import AlertsConfig, AnomaliesConfig, Webhook
from gateway.metrics import alerts_counter
from gateway.slices import Slices
from tests.analytics.synthetic import BUCKET_S, Team, bucket
from tests.clock import FakeClock
from tests.conftest import Receiver, metric_sum

# Night-time buckets of a steady team: 24 of history, then the test's.
TEAM = Team("alpha", rate=20_000, night=1.0, weekend=1.0, jitter=0.03)
FIRST = 5_972_000
CONFIG = AnomaliesConfig(bucket_s=BUCKET_S, cold_start_buckets=12, resolve_after_buckets=2)


def surge(n: int) -> Team:
    return replace(TEAM, rate=TEAM.rate * 4) if n == FIRST + 24 else TEAM


async def write(redis: Redis, first: int, stop: int, shape: object = None) -> None:
    """Fine buckets first..stop-1 of team alpha, as the aggregator writes them."""
    rng = random.Random(first)
    for n in range(first, stop):
        team = surge(n) if shape == "surge" else TEAM
        fields = bucket(team, n, rng)
        key = rediskeys.anomaly_series("alpha", BUCKET_S, n * BUCKET_S)
        await redis.hset(key, mapping=fields)  # type: ignore[arg-type]


def evaluated_by(n: int) -> float:
    """A moment at which bucket n (and no later one) is closed."""
    moment = (n + 1) * BUCKET_S + min(BUCKET_S / 2, 30)
    assert closed_bucket(moment, BUCKET_S) == n
    return moment


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def replica(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> AnomalyDetector:
    metrics = AggregatorMetrics()
    hooks = AlertsConfig((Webhook("finops", receiver.url("finops"), events=(ANOMALY,)),))
    alerts = AlertSender(session, redis, hooks, alerts_counter(metrics.registry))
    return AnomalyDetector(
        redis, CONFIG, teams=lambda: ("alpha",), alerts=alerts, metrics=metrics, clock=clock
    )


async def spiked(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> tuple[AnomalyDetector, FakeClock]:
    """A replica that has evaluated the bucket before the surge, then the surge's (opened)."""
    clock = FakeClock(evaluated_by(FIRST + 23))
    await write(redis, FIRST, FIRST + 25, "surge")
    detector = replica(redis, receiver, session, clock)
    await detector.run_once()
    clock.set(evaluated_by(FIRST + 24))
    await detector.run_once()
    return detector, clock


async def quieted(detector: AnomalyDetector, clock: FakeClock, redis: Redis) -> None:
    """Two normal buckets after the surge, evaluated: enough to resolve it."""
    await write(redis, FIRST + 25, FIRST + 27)
    clock.set(evaluated_by(FIRST + 26))
    await detector.run_once()


def gauge(detector: AnomalyDetector) -> float:
    return metric_sum(detector.metrics.registry, "sg_anomalies_open")


async def test_one_replica_detects_another_takes_over_and_nothing_is_sent_twice(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(evaluated_by(FIRST + 23))
    await write(redis, FIRST, FIRST + 25, "surge")
    a, b = (replica(redis, receiver, session, clock) for _ in range(2))

    assert await a.run_once() == 1  # the newest closed bucket: no catch-up on a first run
    assert await b.run_once() == 0  # a holds the lease
    clock.set(evaluated_by(FIRST + 24))
    assert await a.run_once() == 1
    (post,) = receiver.posts["finops"]
    assert "Spend anomaly in team *alpha* opened" in post["text"]
    assert "more requests" in post["text"]
    store = AnomalyStore(redis)
    (listed,) = await store.list(0)
    opened = listed.anomaly
    assert (opened.status, opened.start_s) == ("open", (FIRST + 24) * BUCKET_S)
    assert a.metrics.detection_lag._sum.get() == evaluated_by(FIRST + 24) - opened.start_s
    assert gauge(a) == 1 and gauge(b) == 0

    # A crash after the alert, before the commit: the bucket is evaluated again, by b.
    cursor, _ = await store.load_state()
    assert cursor is not None and cursor.bucket == FIRST + 24
    await redis.hset(rediskeys.anomaly_state(), "_cursor", f"{BUCKET_S}:{FIRST + 23}")
    await redis.hset(rediskeys.anomaly_state(), "alpha", b'{"runs": {}, "open": {}}')
    await redis.delete(rediskeys.anomaly_lease())  # a is gone: its lease lapsed
    assert await b.run_once() == 1
    assert len(receiver.posts["finops"]) == 1  # the same anomaly id: not posted again
    suppressed = b.metrics.registry.get_sample_value(
        "sg_alerts_total", {"kind": ANOMALY, "outcome": "suppressed"}
    )
    assert suppressed == 1
    assert [x.anomaly.id for x in await store.list(0)] == [opened.id]

    # b carries on from the cursor: the spike is over, two quiet buckets resolve it.
    await write(redis, FIRST + 25, FIRST + 27)
    clock.set(evaluated_by(FIRST + 26))
    assert await b.run_once() == 2
    assert await a.run_once() == 0  # a, back, finds b holding the lease
    assert gauge(a) == 0
    posts = receiver.posts["finops"]
    assert len(posts) == 2 and "Resolved: spend spike in team *alpha*" in posts[1]["text"]
    (listed,) = await store.list(0)
    assert listed.anomaly.status == "resolved"
    assert listed.anomaly.resolved_s == evaluated_by(FIRST + 26)
    assert gauge(b) == 0


async def test_a_detector_that_gives_its_core_way_detects_the_same(redis: Redis) -> None:
    """In `spendgate aggregate` detection slices its work (`gateway.slices`): it gives way
    before each team's evaluation of each bucket, and finds what it finds without."""
    clock = FakeClock(evaluated_by(FIRST + 23))
    await write(redis, FIRST, FIRST + 25, "surge")
    yields: list[int] = []
    detector = AnomalyDetector(
        redis,
        CONFIG,
        teams=lambda: ("alpha",),
        clock=clock,
        slices=Slices(0.0, yield_cpu=lambda: yields.append(1)),
    )
    assert await detector.run_once() == 1
    assert len(yields) == 1
    clock.set(evaluated_by(FIRST + 24))
    assert await detector.run_once() == 1
    assert len(yields) == 2
    (listed,) = await AnomalyStore(redis).list(0)
    assert (listed.anomaly.status, listed.anomaly.start_s) == ("open", (FIRST + 24) * BUCKET_S)


async def test_feedback_expected_silences_an_anomaly_and_its_pattern(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    from gateway.analytics.anomaly import Feedback

    detector, clock = await spiked(redis, receiver, session)
    store = AnomalyStore(redis)
    (listed,) = await store.list(0)
    await store.set_feedback(listed.anomaly.id, Feedback("expected", "load test", clock()))
    assert await store.suppressing(clock() - 60) == {listed.anomaly.pattern(): listed.anomaly.id}
    assert await store.suppressing(clock() + 60) == {}
    await quieted(detector, clock, redis)
    # Resolved, but nobody is told: people said it was expected.
    assert len(receiver.posts["finops"]) == 1
    (listed,) = await store.list(0)
    assert listed.anomaly.status == "resolved" and listed.feedback is not None


async def test_detection_off_writes_nothing_and_holds_no_lease(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(evaluated_by(FIRST + 24))
    await write(redis, FIRST, FIRST + 25, "surge")
    detector = replica(redis, receiver, session, clock)
    detector.config = replace(CONFIG, enabled=False)
    assert await detector.run_once() == 0
    assert not await redis.exists(rediskeys.anomaly_lease(), rediskeys.anomaly_state())


async def test_records_list_by_time_and_team_and_are_forgotten_after_retention(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    detector, clock = await spiked(redis, receiver, session)
    store = AnomalyStore(redis)
    start = (FIRST + 24) * BUCKET_S
    assert len(await store.list(start)) == 1
    assert len(await store.list(start + 1)) == 1  # still open: listed whatever its start
    assert await store.list(0, team="beta") == []
    await quieted(detector, clock, redis)
    assert await store.list(start + 1) == []  # resolved, and started before
    assert await store.forget_before(start + 1) == 1
    assert await store.list(0) == []


async def test_history_imported_meanwhile_is_read_again_the_next_day(
    redis: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """`spendgate import` writes old buckets behind the detector's back: the mirror reads every
    kept bucket again once a day, so they reach the baselines."""
    detector, clock = await spiked(redis, receiver, session)
    old = FIRST - 100  # a day before the history written so far, yet within what is kept
    key = rediskeys.anomaly_series("alpha", BUCKET_S, old * BUCKET_S)
    await redis.hset(key, mapping={"t||cost": 123, "t||requests": 1})
    await detector.run_once()
    assert detector._histories["alpha"].value("t||cost", old) != 123  # not yet
    day = 86_400 // BUCKET_S
    next_day = (FIRST + 24) // day * day + day
    await write(redis, FIRST + 25, next_day + 1)
    clock.set(evaluated_by(next_day))
    await detector.run_once()
    assert detector._histories["alpha"].value("t||cost", old) == 123
