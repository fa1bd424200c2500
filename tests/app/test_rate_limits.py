"""Rate limits through the HTTP API: OpenAI's x-ratelimit-* headers on every answer, a 429 in
OpenAI's shape that the OpenAI SDK raises as RateLimitError (and retries past, after the
window), tokens counted, and limits shared by two gateways on one Redis within the stated
tolerance."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from redis.asyncio import Redis

from gateway.app.state import LIVE_CONFIG, METRICS
from gateway.ratelimits import limiter
from tests.budgets.support import real_db_url
from tests.clock import T0, FakeClock, RunningClock
from tests.conftest import Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "Name three prime numbers please"}]


@pytest.fixture
async def shared_redis(real_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A database of the test run's Redis, empty, as the gateways' store."""
    url = real_db_url(real_redis_url)
    redis = Redis.from_url(url)
    await redis.flushdb()
    monkeypatch.setenv("SPENDGATE_STORE_URL", url)
    yield url
    await redis.flushdb()
    await redis.aclose()


@pytest.fixture(params=["memory", "redis"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "memory":
        monkeypatch.setenv("SPENDGATE_STORE_URL", "memory://")
        return "memory://"
    return str(request.getfixturevalue("shared_redis"))


async def two_gateways(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Gateway, Gateway]:
    """Two gateways on one store, the same keys, and one clock: one minute for both, whatever
    the machine's pace. A store answer slower than the limiter's timeout would send a gateway
    on alone (tested in tests/ratelimits): on a loaded machine that is not what these test."""
    monkeypatch.setattr(limiter, "STORE_TIMEOUT_S", 60.0)
    clock = FakeClock(T0)
    a = await gateway_factory("ratelimits.yaml", clock=clock)
    b = await gateway_factory("ratelimits.yaml", teams=(), clock=clock)
    b.keys = a.keys  # created in the shared store
    return a, b


def sdk(gw: Gateway, team: str = "alpha", retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.keys[team], max_retries=retries)


def refused(gw: Gateway, scope: str, kind: str) -> float:
    value = gw.app[METRICS].registry.get_sample_value(
        "sg_rate_limited_total", {"scope": scope, "kind": kind}
    )
    return value or 0.0


async def test_the_sdk_sees_openai_headers_then_a_rate_limit_error(
    gateway_factory: GatewayFactory, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spendgate.access")
    clock = FakeClock(T0)  # 10:30:00: the window ends in 60 s
    gw = await gateway_factory("ratelimits.yaml", clock=clock)
    async with sdk(gw) as client:
        for left in (2, 1, 0):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=5
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
            assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
            assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
            assert int(raw.headers["x-ratelimit-remaining-tokens"]) <= 100_000
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        clock.advance(30)
        with pytest.raises(openai.RateLimitError) as later:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        clock.advance(30)  # the next minute
        ok = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert "per-key" in error.message and "sk-sg-" not in error.message
    assert error.response.headers["retry-after"] == "60"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert later.value.response.headers["retry-after"] == "30"
    assert ok.choices[0].message.content
    assert refused(gw, "key", "requests") == 2
    lines = [getattr(r, "access", {}) for r in caplog.records if r.name == "spendgate.access"]
    assert [line.get("rate_limited") for line in lines if line.get("status") == 429] == [
        "per-key:requests"
    ] * 2
    # Another team's key is under none of alpha's limits but the team's tokens.
    async with sdk(gw, "beta") as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"


async def test_streams_and_cache_hits_carry_the_headers_too(
    gateway_factory: GatewayFactory, layout: str
) -> None:
    gw = await gateway_factory("ratelimits.yaml", clock=FakeClock(T0))
    async with sdk(gw) as client:
        stream = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5, stream=True
        )
        assert [chunk async for chunk in stream.parse()]
        answers = [
            await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=5, temperature=0
            )
            for _ in range(2)
        ]
    assert stream.headers["x-ratelimit-remaining-requests"] == "2"
    assert [a.headers["x-sg-cache"] for a in answers] == ["miss", "hit"]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0"]


async def test_a_reload_changes_the_limits_at_once(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory("ratelimits.yaml", clock=FakeClock(T0))
    async with sdk(gw) as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        text = gw.config_path.read_text()
        gw.config_path.write_text(text.replace("${SPENDGATE_KEY_RPM:-3}", "5"))
        assert gw.app[LIVE_CONFIG].reload() is True
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
    # The same minute's count, against the new limit: 4 of 5 taken.
    assert raw.headers["x-ratelimit-limit-requests"] == "5"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"


async def test_the_sdk_retries_past_the_window_and_succeeds(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_KEY_RPM", "1")
    # Three seconds before a minute ends: the second request waits out the rest of it.
    gw = await gateway_factory("ratelimits.yaml", clock=RunningClock(T0.timestamp() - 3))
    async with sdk(gw, retries=2) as client:
        first = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
        second = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
    assert first.choices and second.choices
    assert refused(gw, "key", "requests") >= 1  # refused, then retried after Retry-After


async def test_tokens_per_minute_count_what_requests_consumed(
    gateway_factory: GatewayFactory, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_KEY_RPM", "1000")
    monkeypatch.setenv("SPENDGATE_TEAM_TPM", "400")
    gw = await gateway_factory("ratelimits.yaml", clock=FakeClock(T0))
    used = 0
    async with sdk(gw) as client:
        for _ in range(100):
            try:
                done = await client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, max_tokens=20
                )
            except openai.RateLimitError as exc:
                error = exc
                break
            assert done.usage is not None
            used += done.usage.total_tokens
            per_request = done.usage.total_tokens
        else:
            pytest.fail("the token limit never refused")
    assert error.type == "tokens" and error.code == "rate_limit_exceeded"
    assert error.response.headers["x-ratelimit-remaining-tokens"] == "0"
    # One process, one request at a time: over by at most one request, under by one slice.
    assert 400 - 20 <= used < 400 + per_request
    assert refused(gw, "team", "tokens") == 1


async def test_two_gateways_on_one_redis_share_the_limits(
    gateway_factory: GatewayFactory, shared_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_KEY_RPM", "100000")
    monkeypatch.setenv("SPENDGATE_MINI_RPM", "60")
    a, b = await two_gateways(gateway_factory, monkeypatch)
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(
                post_mini(http, gw, a.keys["alpha" if i % 3 else "beta"])
                for i in range(180)
                for gw in ((a, b)[i % 2],)
            )
        )
    statuses = Counter(status for status, _ in results)
    # Requests are taken from the shared count before they are admitted: never more than the
    # limit; and every unit a gateway took was used, since both had requests left to admit.
    # On a loaded machine a request can fail before the stage (the key's lookup timing out:
    # no x-ratelimit headers) or after it (the upstream: not a 200), so count what it decided.
    reached = [(s, h) for s, h in results if "x-ratelimit-limit-requests" in h]
    admitted = [s for s, _ in reached if s != 429]
    assert len(admitted) == min(60, len(reached)), statuses
    assert statuses[429] == len(reached) - len(admitted), statuses
    for status, headers in reached:  # OpenAI's headers on every answer, refused or not
        assert headers["x-ratelimit-limit-requests"] in ("60", "100000")
        assert "x-ratelimit-remaining-requests" in headers
        assert "x-ratelimit-reset-requests" in headers
        assert ("retry-after" in {k.lower() for k in headers}) == (status == 429)
    assert refused(a, "model", "requests") + refused(b, "model", "requests") == statuses[429]
    assert refused(a, "model", "requests") > 0 and refused(b, "model", "requests") > 0


async def post_mini(
    http: aiohttp.ClientSession, gw: Gateway, key: str
) -> tuple[int, dict[str, str]]:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
    async with http.post(
        gw.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        await response.read()
        return response.status, dict(response.headers)


async def test_two_gateways_on_one_redis_share_tokens_per_minute(
    gateway_factory: GatewayFactory, shared_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_KEY_RPM", "100000")
    monkeypatch.setenv("SPENDGATE_TEAM_TPM", "2000")
    a, b = await two_gateways(gateway_factory, monkeypatch)
    used, per_request = 0, 0
    async with (
        sdk(a) as via_a,
        openai.AsyncOpenAI(base_url=b.base_url, api_key=a.keys["alpha"], max_retries=0) as via_b,
    ):
        for turn in range(200):
            try:
                done = await (via_a, via_b)[turn % 2].chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, max_tokens=20
                )
            except openai.RateLimitError as exc:
                assert exc.type == "tokens"
                break
            assert done.usage is not None
            per_request = done.usage.total_tokens
            used += per_request
        else:
            pytest.fail("the token limit never refused")
    # Over the limit by at most what each gateway had in flight (one request each, here);
    # under it by at most one slice (5 % of the limit) per gateway.
    assert 2000 - 2 * 100 <= used < 2000 + 2 * per_request
