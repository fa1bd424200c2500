"""The two-level response cache: the byte-bounded LRU, Redis (fakeredis and a real server),
TTLs, team namespaces, and a Redis that fails or hangs (a miss, never an error)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fakeredis
import orjson
import pytest
import redis.asyncio as aioredis

from gateway import rediskeys
from gateway.cache.key import cache_key
from gateway.cache.store import CachedResponse, MemoryLRU, ResponseCache
from gateway.metrics import Metrics
from gateway.types import Usage
from tests.budgets.support import REAL_DB
from tests.clock import FakeClock
from tests.conftest import LAYOUTS, store_on

BODY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 200}}],
    }
)


def answer(body: bytes = BODY, list_cost: int = 1000) -> CachedResponse:
    return CachedResponse.of(
        body,
        Usage(prompt_tokens=10, cached_prompt_tokens=2, completion_tokens=5),
        served_model="gpt-4o-mini",
        deployment="mock/gpt-4o-mini",
        cost_nano=400,
        list_cost_nano=list_cost,
        created_at=1.0,
    )


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    one = answer(b"x" * 1000)
    lru = MemoryLRU(max_bytes=3 * (one.size + 2), clock=FakeClock(1000.0))
    for name in ("k1", "k2", "k3"):
        lru.put(name, one, expires_at=2000)
    assert len(lru) == 3 and lru.bytes == 3 * (one.size + 2)
    assert lru.get("k1") == one  # k1 becomes the most recent
    lru.put("k4", one, expires_at=2000)
    assert lru.get("k2") is None  # the least recent went
    assert {k for k in ("k1", "k3", "k4") if lru.get(k)} == {"k1", "k3", "k4"}
    assert lru.bytes <= lru.max_bytes


def test_lru_rejects_entries_larger_than_itself_and_replaces_in_place() -> None:
    lru = MemoryLRU(max_bytes=500, clock=FakeClock(1000.0))
    lru.put("big", answer(b"x" * 1000), expires_at=2000)
    assert lru.get("big") is None and lru.bytes == 0
    small = answer(b"{}")
    lru.put("k", small, expires_at=2000)
    lru.put("k", small, expires_at=2000)
    assert len(lru) == 1 and lru.bytes == small.size + 1


def test_lru_ttl_with_injected_clock() -> None:
    clock = FakeClock(1000.0)
    lru = MemoryLRU(max_bytes=1 << 20, clock=clock)
    lru.put("k", answer(), expires_at=clock.now + 60)
    clock.now += 59.9
    assert lru.get("k") is not None
    clock.now += 0.2
    assert lru.get("k") is None
    assert lru.bytes == 0 and len(lru) == 0


async def test_memory_only_cache_ttl_and_namespaces() -> None:
    clock = FakeClock(1000.0)
    cache = ResponseCache(None, 1 << 20, clock=clock)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    alpha = cache_key("chat/completions", body, "t:alpha")
    beta = cache_key("chat/completions", body, "t:beta")
    await cache.put(alpha, answer(), ttl_s=30)
    hit, level = await cache.lookup(alpha)
    assert hit is not None and hit.body == BODY and level == "memory"
    assert await cache.get(beta) is None  # another team never sees alpha's answer
    clock.now += 31
    assert await cache.get(alpha) is None


async def test_entries_over_the_entry_limit_are_not_stored() -> None:
    cache = ResponseCache(None, 1 << 20, max_entry_bytes=100)
    await cache.put("t:a:k", answer(), ttl_s=30)
    assert await cache.get("t:a:k") is None


def test_encoding_round_trips_and_compresses() -> None:
    value = answer()
    blob = value.encode(expires_at=1234.5)
    assert len(blob) < len(BODY) / 5
    decoded, expires_at = CachedResponse.decode(blob)
    assert decoded == value and expires_at == 1234.5
    with pytest.raises(ValueError, match="corrupt"):
        CachedResponse.decode(b"not zlib")


def test_a_small_entry_is_stored_plain_and_round_trips() -> None:
    value = answer(body=b'{"object":"list","data":[{"embedding":[0.1,0.2]}]}')
    blob = value.encode(expires_at=99.0)
    assert blob.startswith(b"{") and blob.endswith(value.body)  # zlib would cost more here
    assert CachedResponse.decode(blob) == (value, 99.0)
    with pytest.raises(ValueError, match="corrupt"):
        CachedResponse.decode(b"{not json\n")


@pytest.mark.parametrize(
    ("fraction", "cost"), [(0.0, 0), (1.0, 1001), (0.1, 100), (0.25, 250), (2.0, 1001)]
)
def test_hit_cost_is_a_fraction_of_list_cost(fraction: float, cost: int) -> None:
    assert answer(list_cost=1001).hit_cost_nano(fraction) == cost


@pytest.fixture
async def fake_redis() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


async def test_redis_level_is_shared_by_replicas(fake_redis: aioredis.Redis) -> None:
    metrics = Metrics()
    one = ResponseCache(fake_redis, 1 << 20, metrics=metrics)
    two = ResponseCache(fake_redis, 1 << 20, metrics=metrics)  # another replica
    await one.put("t:alpha:abc", answer(), ttl_s=60)
    raw = await fake_redis.get(rediskeys.cache_entry("t:alpha:abc"))
    assert raw is not None and zlib.decompress(raw).endswith(BODY)
    assert 0 < await fake_redis.pttl(rediskeys.cache_entry("t:alpha:abc")) <= 60_000
    hit, level = await two.lookup("t:alpha:abc")
    assert hit == answer() and level == "redis"
    hit, level = await two.lookup("t:alpha:abc")  # now promoted to two's memory
    assert level == "memory"
    assert await two.get("t:beta:abc") is None

    def count(result: str, level: str) -> float:
        return (
            metrics.registry.get_sample_value(
                "sg_cache_lookups_total", {"result": result, "level": level}
            )
            or 0.0
        )

    assert count("hit", "redis") == 1 and count("hit", "memory") == 1
    assert count("miss", "memory") == 2 and count("miss", "redis") == 1


async def test_the_memory_levels_size_is_reported_when_metrics_are_read() -> None:
    metrics = Metrics()
    cache = ResponseCache(None, 1 << 20, metrics=metrics)
    await cache.put("t:alpha:a", answer(), ttl_s=60)
    await cache.put("t:alpha:b", answer(b'{"other": true}'), ttl_s=60)
    assert cache.memory.bytes > 0
    scraped = metrics.exposition().decode()
    assert f"sg_cache_memory_bytes {float(cache.memory.bytes)}" in scraped
    cache.memory.clear()
    assert "sg_cache_memory_bytes 0.0" in metrics.exposition().decode()


async def test_put_soon_writes_redis_in_the_background(fake_redis: aioredis.Redis) -> None:
    cache = ResponseCache(fake_redis, 1 << 20)
    cache.put_soon("t:a:k", answer(), ttl_s=60)
    assert cache.memory.get("t:a:k") is not None  # memory at once
    await cache.aclose()
    assert await fake_redis.exists(rediskeys.cache_entry("t:a:k")) == 1


async def test_corrupt_redis_entry_is_a_miss(fake_redis: aioredis.Redis) -> None:
    await fake_redis.set(rediskeys.cache_entry("t:a:k"), b"garbage")
    cache = ResponseCache(fake_redis, 1 << 20)
    assert await cache.get("t:a:k") is None
    assert cache.redis_errors == 1


async def test_real_redis_round_trip_and_ttl_expiry(real_redis_url: str) -> None:
    client = aioredis.Redis.from_url(real_redis_url.rsplit("/", 1)[0] + "/3")
    try:
        await client.flushdb()
        writer = ResponseCache(client, 1 << 20)
        reader = ResponseCache(client, 0)  # no memory level: every read goes to Redis
        await writer.put("t:alpha:k", answer(), ttl_s=60)
        hit, level = await reader.lookup("t:alpha:k")
        assert hit == answer() and level == "redis"
        assert await reader.get("t:beta:k") is None
        await writer.put("t:alpha:brief", answer(), ttl_s=0.2)
        assert 0 < await client.pttl(rediskeys.cache_entry("t:alpha:brief")) <= 200
        async with asyncio.timeout(5):  # Redis expires it on its own clock
            while await client.exists(rediskeys.cache_entry("t:alpha:brief")):
                await asyncio.sleep(0.05)
        assert await reader.get("t:alpha:brief") is None
        assert await reader.get("t:alpha:k") == answer()
    finally:
        await client.flushdb()
        await client.aclose()


async def test_redis_promoted_entry_keeps_its_remaining_ttl(fake_redis: aioredis.Redis) -> None:
    clock = FakeClock(1000.0)
    writer = ResponseCache(fake_redis, 1 << 20, clock=clock)
    await writer.put("t:a:k", answer(), ttl_s=100)
    clock.now += 90
    reader = ResponseCache(fake_redis, 1 << 20, clock=clock)
    assert await reader.get("t:a:k") is not None  # from Redis, expiring at the original time
    clock.now += 11
    assert reader.memory.get("t:a:k") is None
    # Redis still holds it (its PX runs on Redis's clock); past its expiry on this cache's
    # clock it is a miss all the same, and not promoted.
    assert await fake_redis.exists(rediskeys.cache_entry("t:a:k"))
    late = ResponseCache(fake_redis, 1 << 20, clock=clock)
    assert await late.lookup("t:a:k") == (None, "none")
    assert len(late.memory) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_redis_is_a_miss_then_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(1000.0)
    client = aioredis.Redis(host="127.0.0.1", port=_free_port(), socket_connect_timeout=0.2)
    try:
        cache = ResponseCache(
            client, 1 << 20, clock=clock, redis_timeout_s=0.3, redis_backoff_s=5.0
        )
        with caplog.at_level(logging.WARNING, logger="spendgate.cache"):
            assert await cache.get("t:a:k1") is None  # fails (refused or timed out)
            assert cache.redis_errors == 1
            # Within the backoff Redis is not even tried: no wait, no new error.
            started = asyncio.get_running_loop().time()
            await cache.put("t:a:k2", answer(), ttl_s=60)
            assert await cache.get("t:a:k3") is None
            assert asyncio.get_running_loop().time() - started < 0.05
            assert cache.redis_errors == 1
            assert await cache.get("t:a:k2") is not None  # the memory level still works
            clock.now += 5.0  # backoff over: Redis is tried (and fails) again
            assert await cache.get("t:a:k4") is None
            assert cache.redis_errors == 2
        assert len([r for r in caplog.records if "Redis" in r.getMessage()]) == 1
    finally:
        await client.aclose()


async def test_hanging_redis_times_out_as_a_miss() -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        cache = ResponseCache(client, 1 << 20, redis_timeout_s=0.1)
        started = asyncio.get_running_loop().time()
        assert await cache.get("t:a:k") is None
        assert asyncio.get_running_loop().time() - started < 1.0
        assert cache.redis_errors == 1
    finally:
        await client.aclose()
        done.set()
        server.close()
        await server.wait_closed()


def test_memory_entries_drop_out_of_the_garbage_collectors_scans() -> None:
    """The memory level can hold hundreds of thousands of entries: if the GC tracked them,
    every full collection would scan them all (tens of ms under load)."""
    memory = MemoryLRU(1 << 20)
    memory.put("t:a:k", answer(), expires_at=time.time() + 60)
    gc.collect()
    (slot,) = memory._slots.values()
    assert not gc.is_tracked(slot)
    hit = memory.get("t:a:k")
    assert hit is not None and hit.usage.completion_tokens == 5


def test_an_entry_holds_no_more_memory_than_its_body() -> None:
    def rss_delta_per_item(make: Callable[[int], object]) -> float:
        before = int(Path("/proc/self/statm").read_text().split()[1])
        kept = [make(i) for i in range(20_000)]
        after = int(Path("/proc/self/statm").read_text().split()[1])
        assert len(kept) == 20_000
        return (after - before) * 4096 / 20_000

    # orjson's output of a small answer holds ~4 KB; the entry keeps only the body's own bytes.
    per_entry = rss_delta_per_item(
        lambda i: CachedResponse.of(orjson.dumps({"n": i, "text": "short answer"}), Usage())
    )
    assert per_entry < 1024


@pytest.fixture(params=LAYOUTS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """The bounded Redis level on every store layout (on a cluster, each shard's keys must
    share a slot)."""
    async with store_on(request, request.param, REAL_DB) as client:
        yield client


INCOMPRESSIBLE = hashlib.shake_256(b"large").digest(16384)


def in_shard(n: int, shard: str = "a") -> str:
    """The n-th cache key of one shard (keys end in their hash's last hex digit)."""
    return f"t:alpha:{n:063x}{shard}"


def room_for(count: int, one: CachedResponse, clock: FakeClock) -> int:
    """A shard's bound with room for `count` entries like `one` and not one more (an entry's
    blob varies by a byte or two with its expiry)."""
    entry_bytes = len(one.encode(clock.now + 500)) + len(rediskeys.cache_entry(in_shard(0)))
    return count * entry_bytes + entry_bytes // 2


async def stored_bytes(client: aioredis.Redis, keys: list[str]) -> dict[str, int]:
    """What the level holds of `keys`: each present entry's bytes and key, as the bound counts."""
    held = {}
    for key in keys:
        entry = rediskeys.cache_entry(key)
        if length := await client.strlen(entry):
            held[key] = length + len(entry)
    return held


async def test_a_full_shard_evicts_the_entries_closest_to_expiry(store: aioredis.Redis) -> None:
    clock, metrics = FakeClock(1000.0), Metrics()
    one = answer(b'{"n": "' + b"x" * 4000 + b'"}')
    cache = ResponseCache(store, 0, clock=clock, metrics=metrics, redis_max_bytes=1)
    cache.redis_max_bytes = rediskeys.CACHE_SHARDS * room_for(5, one, clock)  # a shard's
    keys = [in_shard(n) for n in range(8)]
    # Stored in this order, expiring in another: 0 and 5 first, then 3, 6, 1...
    ttls = [100, 700, 800, 300, 900, 200, 500, 600]
    for key, ttl in zip(keys, ttls, strict=True):
        await cache.put(key, one, ttl_s=ttl)
    held = await stored_bytes(store, keys)
    assert sorted(held) == sorted(keys[n] for n in (1, 2, 4, 6, 7))  # 0, 5, 3 went, in order
    assert sum(held.values()) <= cache.redis_max_bytes // rediskeys.CACHE_SHARDS
    assert metrics.registry.get_sample_value("sg_cache_redis_evictions_total") == 3
    for key in keys:
        assert (await cache.get(key) is not None) == (key in held)
    # Another shard has room of its own.
    await cache.put(in_shard(0, shard="b"), one, ttl_s=50)
    assert await cache.get(in_shard(0, shard="b")) == one
    assert sorted(await stored_bytes(store, keys)) == sorted(held)


async def test_an_entry_stored_again_counts_once(store: aioredis.Redis) -> None:
    clock = FakeClock(1000.0)
    one = answer(b'{"n": "' + b"y" * 4000 + b'"}')
    cache = ResponseCache(store, 0, clock=clock)
    cache.redis_max_bytes = rediskeys.CACHE_SHARDS * room_for(3, one, clock)
    for _ in range(10):  # a refresh, or two replicas storing the same answer
        await cache.put(in_shard(0), one, ttl_s=600)
    await cache.put(in_shard(1), one, ttl_s=600)
    await cache.put(in_shard(2), one, ttl_s=600)
    assert len(await stored_bytes(store, [in_shard(n) for n in range(3)])) == 3


async def test_expired_entries_stop_counting_against_the_bound(store: aioredis.Redis) -> None:
    clock = FakeClock(1000.0)
    one = answer(b'{"n": "' + b"z" * 4000 + b'"}')
    cache = ResponseCache(store, 0, clock=clock)
    cache.redis_max_bytes = rediskeys.CACHE_SHARDS * room_for(3, one, clock)
    await cache.put(in_shard(0), one, ttl_s=3600)
    await cache.put(in_shard(1), one, ttl_s=60)  # past its expiry below, on the cache's clock
    await cache.put(in_shard(2), one, ttl_s=60)
    clock.now += 120
    await cache.put(in_shard(3), one, ttl_s=3600)
    await cache.put(in_shard(4), one, ttl_s=3600)
    # The two expired ones made the room: the long-lived first entry was not evicted for them.
    assert await cache.get(in_shard(0)) == one
    assert await cache.get(in_shard(3)) == one and await cache.get(in_shard(4)) == one


async def test_many_entries_across_shards_stay_within_the_bound(store: aioredis.Redis) -> None:
    clock, metrics = FakeClock(1000.0), Metrics()
    bound = rediskeys.CACHE_SHARDS * 32 * 1024
    cache = ResponseCache(store, 0, clock=clock, metrics=metrics, redis_max_bytes=bound)
    keys = [
        cache_key("embeddings", {"model": "e", "input": f"text {n}"}, f"t:team{n % 3}")
        for n in range(400)
    ]
    for n, key in enumerate(keys):
        vector = [(n * 7919 + i) * 2654435761 % 10**9 / 1e9 for i in range(300)]
        body = orjson.dumps({"data": [{"embedding": vector}]})
        await cache.put(key, answer(body), ttl_s=600 + n)
    held = await stored_bytes(store, keys)
    assert 0 < sum(held.values()) <= bound
    for shard in "0123456789abcdef":
        in_it = [b for k, b in held.items() if k.endswith(shard)]
        assert sum(in_it) <= bound // rediskeys.CACHE_SHARDS
    evicted = metrics.registry.get_sample_value("sg_cache_redis_evictions_total")
    assert evicted == len(keys) - len(held)
    assert len(held) < len(keys)


async def test_a_large_entry_makes_room_a_few_dozen_entries_at_a_time(
    store: aioredis.Redis,
) -> None:
    clock, metrics = FakeClock(1000.0), Metrics()
    small, large = answer(b'{"n": 1}'), answer(INCOMPRESSIBLE)
    cache = ResponseCache(store, 0, clock=clock, metrics=metrics, max_entry_bytes=1 << 20)
    cache.redis_max_bytes = rediskeys.CACHE_SHARDS * room_for(1, large, clock)
    room = room_for(1, large, clock)
    smalls = [in_shard(n) for n in range(1, room // (len(small.encode(clock.now)) + 90))]
    for key in smalls:
        await cache.put(key, small, ttl_s=600)
    full = len(await stored_bytes(store, smalls))
    assert full > 64  # the shard is full of small entries
    # One call evicts at most 32 of them (a call never blocks the store for long) and stores
    # the large entry only once it fits.
    attempts = 0
    while await cache.get(in_shard(0)) is None:
        before = len(await stored_bytes(store, smalls))
        await cache.put(in_shard(0), large, ttl_s=900)
        assert before - len(await stored_bytes(store, smalls)) <= 32
        attempts += 1
    assert attempts > 1
    held = await stored_bytes(store, [*smalls, in_shard(0)])
    assert sum(held.values()) <= room
    evicted = metrics.registry.get_sample_value("sg_cache_redis_evictions_total")
    assert evicted == full - (len(held) - 1)


async def test_an_entry_larger_than_its_shard_is_never_stored(store: aioredis.Redis) -> None:
    clock = FakeClock(1000.0)
    small, large = answer(b'{"n": 1}'), answer(INCOMPRESSIBLE)
    cache = ResponseCache(store, 0, clock=clock, max_entry_bytes=1 << 20)
    cache.redis_max_bytes = rediskeys.CACHE_SHARDS * room_for(1, large, clock) // 2
    await cache.put(in_shard(1), small, ttl_s=600)
    await cache.put(in_shard(0), large, ttl_s=600)
    assert await cache.get(in_shard(0)) is None
    assert await cache.get(in_shard(1)) == small  # nothing was evicted for it
