"""The shared count: slices taken from the store, never more requests than the limit across
processes, used-up windows refused locally, a new window starting afresh, and a process going
on alone when the store is unreachable. On every store layout."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.ratelimits.limiter import WINDOW_S, Bundle, Limit, RateLimiter
from gateway.store.connect import close_store, open_store
from tests.clock import FakeClock

RPM = Limit("per-team", "team", "alpha", "requests", 40)
TPM = Limit("per-team", "team", "alpha", "tokens", 1000)


async def admitted(limiter: RateLimiter, n: int, limits: list[Limit]) -> int:
    results = await asyncio.gather(*(limiter.admit(limits) for _ in range(n)))
    return sum(over is None for _, over in results)


def count_takes(limiter: RateLimiter, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `want` of each take from the store from now on."""
    wants: list[int] = []
    call = limiter._call

    async def counting(key: str, limit: int, want: int, debt: int, ttl_ms: int) -> object:
        wants.append(want)
        return await call(key, limit, want, debt, ttl_ms)

    monkeypatch.setattr(limiter, "_call", counting)
    return wants


async def test_two_processes_never_admit_more_requests_than_the_limit(
    store: Redis, clock: FakeClock
) -> None:
    a, b = RateLimiter(store, clock), RateLimiter(store, clock)
    got = await asyncio.gather(admitted(a, 35, [RPM]), admitted(b, 35, [RPM]))
    assert sum(got) == RPM.limit  # every unit granted was used: each process ran out of room
    window = int(clock() // WINDOW_S)
    count = await store.get(rediskeys.rate_count("per-team", "alpha", "requests", window))
    assert int(count) == RPM.limit
    await a.aclose()
    await b.aclose()


async def test_a_process_takes_slices_not_a_round_trip_per_request(
    store: Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(store, clock, local_share=0.1)
    calls = count_takes(limiter, monkeypatch)
    big = Limit("per-key", "key", "k1", "requests", 1000)
    for _ in range(200):
        _, over = await limiter.admit([big])
        assert over is None
    await limiter.aclose()
    assert calls[0] == 100  # a tenth of what is left
    assert len(calls) <= 4  # 200 requests, slices of ~100 (taken ahead, in the background)


async def test_a_used_up_window_is_refused_without_asking_the_store_until_the_next(
    store: Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(store, clock)
    assert await admitted(limiter, 50, [RPM]) == RPM.limit
    calls = count_takes(limiter, monkeypatch)
    assert await admitted(limiter, 20, [RPM]) == 0
    assert calls == []
    clock.advance(WINDOW_S)  # the next minute
    assert await admitted(limiter, 50, [RPM]) == RPM.limit
    assert calls  # a new window, a new count
    await limiter.aclose()


async def test_a_request_over_one_limit_takes_nothing_from_the_others(
    store: Redis, clock: FakeClock
) -> None:
    limiter = RateLimiter(store, clock)
    tight = Limit("per-key", "key", "k1", "requests", 3)
    assert await admitted(limiter, 5, [tight, RPM]) == 3
    slices, over = await limiter.admit([RPM])
    assert over is None
    assert slices[0].remaining == RPM.limit - 4  # the two refused took no request from RPM
    await limiter.aclose()


async def test_tokens_are_admitted_while_any_are_left_and_counted_once_consumed(
    store: Redis, clock: FakeClock
) -> None:
    a, b = RateLimiter(store, clock), RateLimiter(store, clock)
    consumed = 0
    for turn in range(100):
        limiter = a if turn % 2 else b
        bundle = Bundle((TPM,))
        _, over = await limiter.admit(bundle)
        if over is not None:
            break
        limiter.consume(bundle, 70)
        consumed += 70
    else:
        pytest.fail("the token limit never refused")
    # Admitted while there was room: over the limit by at most the tokens of what each process
    # had in flight (one request each here), under it by at most the slices they held unused.
    assert TPM.limit - 2 * 50 <= consumed < TPM.limit + 2 * 70
    await a.aclose()
    await b.aclose()


async def test_without_the_store_a_process_limits_alone(clock: FakeClock) -> None:
    unreachable = await open_store("redis://127.0.0.1:9/0")  # nothing listens on port 9
    try:
        limiter = RateLimiter(unreachable, clock)
        assert await admitted(limiter, 50, [RPM]) == RPM.limit
        await limiter.aclose()
    finally:
        await close_store(unreachable)
