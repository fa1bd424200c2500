"""Spend anomalies end to end, through real sockets: traffic through a gateway (embedded store,
so its aggregator detects in 2-second buckets) on an injected clock, a spike from one key, the
opened alert posted to a webhook receiver naming that key, then the resolved one; the same
anomaly in the admin API and the report, feedback on it, and the metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from gateway import rediskeys
from gateway.app.state import KEYRING, REDIS
from gateway.rollupformat import SERIES_TEAM, series_field
from tests.clock import T0, FakeClock
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory, Receiver

BUCKET_S = 2
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    """Poll for a state other tasks reach on their own (the aggregator, the detector)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Traffic:
    """Drives a gateway one bucket at a time: requests in the middle of a bucket, wait until
    the aggregator has applied them, move on, wait until the detector has evaluated it."""

    def __init__(self, gw: Gateway, clock: FakeClock, session: aiohttp.ClientSession) -> None:
        self.gw, self.clock, self.session = gw, clock, session
        self.sent = 0

    @property
    def bucket(self) -> int:
        return int(self.clock()) // BUCKET_S

    async def chat(self, key: str, n: int) -> None:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(n):
            async with self.session.post(
                self.gw.base_url + "/chat/completions", json=body, headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()

    async def run(self, per_key: dict[str, int]) -> int:
        """One bucket of traffic; returns the bucket's number once it is evaluated."""
        bucket = self.bucket
        for key, count in per_key.items():
            await self.chat(key, count)
        expected = sum(per_key.values())
        redis = self.gw.app[REDIS]
        series = rediskeys.anomaly_series("alpha", BUCKET_S, bucket * BUCKET_S)
        requests = series_field(SERIES_TEAM, "", "requests")

        async def applied() -> bool:
            return int(await redis.hget(series, requests) or 0) == expected

        await until(applied, f"bucket {bucket}'s {expected} requests applied")
        self.clock.advance(BUCKET_S)

        async def evaluated() -> bool:
            cursor = await redis.hget(rediskeys.anomaly_state(), "_cursor")
            return cursor is not None and int(cursor.split(b":")[1]) >= bucket

        await until(evaluated, f"bucket {bucket} evaluated")
        return bucket


@pytest.fixture
async def session() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_spike_from_one_key_is_alerted_naming_it_then_resolved(
    gateway_factory: GatewayFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_WEBHOOK_URL", receiver.url("finops"))
    # The middle of a bucket: a bucket is evaluated from the middle of the next one on.
    clock = FakeClock(T0.timestamp() // BUCKET_S * BUCKET_S + BUCKET_S / 2)
    gw = await gateway_factory("anomalies.yaml", teams=(), clock=clock)
    steady, _ = await gw.app[KEYRING].create("alpha", name="steady")
    runaway, runaway_info = await gw.app[KEYRING].create("alpha", name="batch-job")
    traffic = Traffic(gw, clock, session)

    for _ in range(8):  # the cold start (6 buckets), then a baseline
        await traffic.run({steady: 2, runaway: 2})
    assert receiver.posts.get("finops") is None  # steady traffic raises nothing

    spike = await traffic.run({steady: 2, runaway: 30})
    (opened,) = receiver.posts["finops"]
    text = opened["text"]
    assert "Spend anomaly in team *alpha* opened" in text
    assert f"key `{runaway_info.key_id}`" in text.split("Possible causes:")[1].split(";")[0]
    fields = {f["title"]: f["value"] for f in opened["attachments"][0]["fields"]}
    assert fields["kind"] == "spike" and fields["team"] == "alpha"
    assert fields["top_cause"].startswith(f"key `{runaway_info.key_id}`")
    assert gw.metric("sg_anomalies_open", team="alpha") == 1
    assert gw.metric("sg_anomaly_detection_lag_seconds_count") == 1
    # Opened at the first evaluation after the spike's bucket: within one bucket (plus grace).
    lag = gw.metric("sg_anomaly_detection_lag_seconds_sum")
    assert 0 < lag <= 2 * BUCKET_S

    async with session.get(gw.url + "/admin/anomalies", headers=AUTH) as resp:
        assert resp.status == 200
        listed = (await resp.json())["data"]
    (anomaly,) = listed
    assert anomaly["status"] == "open" and anomaly["kind"] == "spike"
    assert anomaly["start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(spike * BUCKET_S))
    assert anomaly["causes"][0]["kind"] == "key"
    assert anomaly["causes"][0]["value"] == runaway_info.key_id
    assert float(anomaly["excess_usd"]) > 0

    for _ in range(3):  # back to normal: resolved after resolve_after_buckets (2)
        await traffic.run({steady: 2, runaway: 2})
    posts = receiver.posts["finops"]
    assert len(posts) == 2
    assert posts[1]["text"].startswith("[spendgate] :white_check_mark: Resolved: spend spike")
    assert runaway_info.key_id in posts[1]["text"]
    assert gw.metric("sg_anomalies_open", team="alpha") == 0

    url = f"{gw.url}/admin/anomalies/{anomaly['id']}"
    async with session.post(url + "/feedback", json={"verdict": "real"}, headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["status"] == "resolved"
    assert answer["feedback"]["verdict"] == "real"
    async with session.get(
        gw.url + "/admin/anomalies", params={"format": "csv"}, headers=AUTH
    ) as resp:
        csv_text = await resp.text()
    assert anomaly["id"] in csv_text and "real" in csv_text
    assert f"key {runaway_info.key_id}" in csv_text
