"""An anomaly record as the detector writes it, for tests of what reads records (the admin API,
the CLI, the report)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway import rediskeys
from gateway.analytics.anomaly import Anomaly, TeamState
from gateway.analytics.causes import Cause
from gateway.anomalies.records import AnomalyStore, Cursor
from tests.clock import T0

START = int(T0.timestamp()) // 300 * 300
ANOMALY_ID = "alpha-spike-20261105T103000Z"


def sample_anomaly() -> Anomaly:
    """Team alpha's spike from T0's bucket, three buckets long, escalated to high."""
    return Anomaly(
        id=ANOMALY_ID,
        team="alpha",
        kind="spike",
        scope="team",
        status="escalated",
        severity="high",
        start_s=START,
        end_s=START + 900,
        bucket_s=300,
        detected_s=START + 330,
        updated_s=START + 930,
        buckets=3,
        actual_nano=150_000_000_000,
        expected_nano=30_000_000_000,
        band_low_nano=24_000_000_000,
        band_high_nano=36_000_000_000,
        z=41.5,
        causes=[
            Cause("key", "key_0000000000aa", 118_000_000_000, 0.98, "new key, never seen before"),
            Cause("volume", "", 115_000_000_000, 0.96, "requests 3,000 -> 14,500"),
        ],
    )


async def plant_beside_detector(redis: Redis) -> Anomaly:
    """`plant` into the store of a running gateway whose embedded aggregator detects anomalies:
    once its detector has committed its first evaluation (the state's cursor), so that no run
    which read the state before the plant commits over it afterwards. The planted cursor is
    ahead of the test clocks' last closed bucket: the detector then leaves the state alone."""
    async with asyncio.timeout(10):
        while await redis.hget(rediskeys.anomaly_state(), "_cursor") is None:
            await asyncio.sleep(0.02)
    return await plant(redis)


async def plant(redis: Redis) -> Anomaly:
    """Store the sample anomaly, open, as the detector commits a bucket."""
    anomaly = sample_anomaly()
    state = {"alpha": TeamState(open={"spike": anomaly.id})}
    await AnomalyStore(redis).commit(Cursor(300, START // 300 + 2), state, [anomaly])
    return anomaly
