"""The response cache's two levels: an in-process LRU bounded by bytes, then Redis.

A lookup tries this process's memory first, then Redis (zlib-compressed, shared by replicas),
and copies a Redis hit into memory until the entry's own expiry. The Redis level is bounded by
bytes too (`redis_max_bytes`, split over the key space's shards): a script stores each entry
and evicts the entries closest to expiry when its shard is full, so the cache never fills the
store that budgets and spend live in. The cache is an optimization:
a Redis error or a slow Redis reads as a miss and a failed write is dropped, logged at most once
per interval, and the Redis level is then skipped for `redis_backoff_s`, so an outage costs one
timeout per backoff period rather than one per request. The cache never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.store.batch import CommandBatcher, within
from gateway.store.connect import batcher_for
from gateway.types import Usage

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from gateway.metrics import Metrics

log = logging.getLogger("spendgate.cache")

Level = Literal["memory", "redis", "none"]
# Python object headers, the dict slot, the key string: what an entry costs beyond its bytes.
_ENTRY_OVERHEAD = 400
_FORMAT_VERSION = 1
# Below this many bytes an entry is stored as is: zlib's set-up (a fresh compressor per call)
# costs more than the few bytes it would save.
_COMPRESS_FROM = 1024
_PPM = 1_000_000
_PUT_SCRIPT = (importlib.resources.files("gateway.cache") / "lua" / "put.lua").read_text()


class CachedResponse(NamedTuple):
    """One stored answer, shared by every hit on it; build one with `of`.

    `body` is the final non-streaming JSON (a streamed miss is stored assembled, see
    `cache.replay`). `cost_nano` is what the original call was billed, `list_cost_nano` its list
    cost (the requested model's list price): a hit saves `list_cost_nano`, minus what
    `hit_cost_nano` bills it at.

    Plain values only, its usage included: the memory level keeps them as plain tuples,
    which the garbage collector stops tracking (see MemoryLRU).
    """

    body: bytes
    content_type: str = "application/json"
    prompt_tokens: int = 0  # the usage of the original call, as Usage's fields
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    served_model: str = ""  # the upstream model that produced the answer
    deployment: str = ""
    cost_nano: int = 0
    list_cost_nano: int = 0
    created_at: float = 0.0  # epoch seconds when stored

    @classmethod
    def of(cls, body: bytes, usage: Usage, **fields: Any) -> CachedResponse:
        """The entry for `body` (copied to its exact size: orjson's output keeps a buffer of 4 KB
        or more whatever its length, so a small answer assembled or split by orjson would hold
        ten times the memory the cache counts for it) and the usage of the call."""
        u = usage
        return cls(
            bytes(memoryview(body)),
            prompt_tokens=u.prompt_tokens,
            cached_prompt_tokens=u.cached_prompt_tokens,
            completion_tokens=u.completion_tokens,
            reasoning_tokens=u.reasoning_tokens,
            tokens_estimated=u.estimated,
            **fields,
        )

    @property
    def usage(self) -> Usage:
        return Usage(
            self.prompt_tokens,
            self.cached_prompt_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
            self.tokens_estimated,
        )

    def hit_cost_nano(self, fraction: float) -> int:
        """What a hit is billed: `fraction` (0..1, CacheConfig.hit_cost_fraction) of the list
        cost, in whole nano-USD rounded half up."""
        ppm = round(min(max(fraction, 0.0), 1.0) * _PPM)
        return (self.list_cost_nano * ppm + _PPM // 2) // _PPM

    def encode(self, expires_at: float) -> bytes:
        meta = {
            "v": _FORMAT_VERSION,
            "ct": self.content_type,
            "u": [
                self.prompt_tokens,
                self.cached_prompt_tokens,
                self.completion_tokens,
                self.reasoning_tokens,
            ],
            "ue": self.tokens_estimated,
            "m": self.served_model,
            "d": self.deployment,
            "c": self.cost_nano,
            "l": self.list_cost_nano,
            "t": self.created_at,
            "x": expires_at,
        }
        # orjson never writes a raw newline, so the first one ends the header. Level 1: on a
        # 1536-dimension embedding (30 KB of JSON) it takes 0.4 ms against level 6's 1.6 ms, on
        # the event loop, for 2% more bytes. A small entry stays plain: it starts with the
        # header's "{", a zlib stream never does.
        raw = orjson.dumps(meta) + b"\n" + self.body
        return raw if len(raw) < _COMPRESS_FROM else zlib.compress(raw, 1)

    @classmethod
    def decode(cls, blob: bytes) -> tuple[CachedResponse, float]:
        """The response and its expiry (epoch seconds); ValueError if `blob` is not ours."""
        try:
            raw = blob if blob[:1] == b"{" else zlib.decompress(blob)
            header, _, body = raw.partition(b"\n")
            meta = orjson.loads(header)
            if not isinstance(meta, dict) or meta.get("v") != _FORMAT_VERSION:
                raise ValueError("unknown cache entry format")
            prompt, cached, completion, reasoning = (int(n) for n in meta["u"])
            value = cls(
                body=body,
                content_type=meta["ct"],
                prompt_tokens=prompt,
                cached_prompt_tokens=cached,
                completion_tokens=completion,
                reasoning_tokens=reasoning,
                tokens_estimated=bool(meta["ue"]),
                served_model=meta["m"],
                deployment=meta["d"],
                cost_nano=int(meta["c"]),
                list_cost_nano=int(meta["l"]),
                created_at=float(meta["t"]),
            )
            return value, float(meta["x"])
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt cache entry: {exc}") from None

    @property
    def size(self) -> int:
        """Bytes this entry is charged in the memory level."""
        return (
            len(self.body)
            + len(self.content_type)
            + len(self.served_model)
            + len(self.deployment)
            + _ENTRY_OVERHEAD
        )


class MemoryLRU:
    """Least-recently-used entries bounded by their total size in bytes, each with its expiry.

    Each slot is one plain tuple, the CachedResponse's fields then expires_at and size: CPython
    stops tracking a plain tuple of untracked values at its first collection, where it tracks
    every named tuple or object for good. The level holds up to hundreds of thousands of
    entries, and every full collection would scan them all (measured: 30-80 ms pauses under
    load).
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max(0, max_bytes)
        self.bytes = 0
        self._clock = clock
        self._slots: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: str) -> CachedResponse | None:
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot[-2] <= self._clock():  # expires_at
            self._drop(key)
            return None
        self._slots.move_to_end(key)
        return CachedResponse._make(slot[:-2])

    def put(self, key: str, value: CachedResponse, expires_at: float) -> None:
        size = len(key) + value.size
        if key in self._slots:
            self._drop(key)
        if size > self.max_bytes or expires_at <= self._clock():
            return
        self._slots[key] = (*value, expires_at, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._slots)))

    def clear(self) -> None:
        self._slots.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        self.bytes -= self._slots.pop(key)[-1]


class ResponseCache:
    """`get` / `put` over memory then Redis. `redis=None` runs with the memory level only.

    `put` writes memory at once and awaits the Redis write (bounded by `redis_timeout_s`);
    `put_soon` returns after the memory write and leaves the Redis write to the batch it joins,
    which `aclose` waits for. Redis reads and writes of one loop turn go in one pipelined round
    trip (store/batch.py). Entries above `max_entry_bytes` are not stored at all; the Redis
    level holds at most `redis_max_bytes` of entries (blobs and keys).
    """

    def __init__(
        self,
        redis: Redis | None,
        max_memory_bytes: int,
        *,
        max_entry_bytes: int = 1024 * 1024,
        redis_max_bytes: int = 256 * 1024 * 1024,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        redis_timeout_s: float = 0.25,
        redis_backoff_s: float = 5.0,
        error_log_interval_s: float = 60.0,
    ) -> None:
        self.redis = redis
        self.memory = MemoryLRU(max_memory_bytes, clock)
        self.max_entry_bytes = max_entry_bytes
        self.redis_max_bytes = redis_max_bytes
        self.metrics = metrics
        self.redis_timeout_s = redis_timeout_s
        self.redis_backoff_s = redis_backoff_s
        self.redis_errors = 0
        self._redis_down_until = -float("inf")
        self._clock = clock
        self._error_log_interval_s = error_log_interval_s
        self._last_error_log = -float("inf")
        self._suppressed = 0
        self._batch = None if redis is None else batcher_for(redis)
        self._put_script: AsyncScript | None = (
            None if redis is None else redis.register_script(_PUT_SCRIPT)
        )
        # The lookup counters' series, found once: a lookup is counted on every request.
        self._lookups: dict[tuple[Level, bool], Any] = {}
        if metrics is not None:
            self._lookups = {
                (level, hit): metrics.child(metrics.cache_lookups, "hit" if hit else "miss", level)
                for level in ("memory", "redis")
                for hit in (True, False)
            }
            # The memory level's size, read when the metrics are (not set on every write).
            metrics.before_collect(self._report_size)

    def _report_size(self) -> None:
        assert self.metrics is not None
        self.metrics.cache_memory_bytes.set(self.memory.bytes)

    async def get(self, key: str) -> CachedResponse | None:
        return (await self.lookup(key))[0]

    async def lookup(self, key: str) -> tuple[CachedResponse | None, Level]:
        """The entry and the level that answered ("none" on a miss)."""
        value = self.memory.get(key)
        self._count("memory", value is not None)
        if value is not None:
            return value, "memory"
        batch = self._usable_redis()
        if batch is None:
            return None, "none"
        try:
            get = batch.execute("GET", rediskeys.cache_entry(key))
            blob = await within(get, self.redis_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed("read", exc)
            blob = None
        found: CachedResponse | None = None
        if isinstance(blob, bytes):
            try:
                found, expires_at = CachedResponse.decode(blob)
            except ValueError as exc:
                self._redis_failed("decode", exc)
            else:
                # Redis's PX is rounded to the millisecond and runs on Redis's clock: the
                # entry's own expiry, on this cache's clock, decides (as the memory level's).
                if expires_at > self._clock():
                    self._memorize(key, found, expires_at)
                else:
                    found = None
        self._count("redis", found is not None)
        return found, ("redis" if found is not None else "none")

    async def put(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        expires_at = self._clock() + ttl_s
        if not self._accept(value, ttl_s):
            return
        self._memorize(key, value, expires_at)
        await self._write(key, value, expires_at, ttl_s)

    def put_soon(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        """`put` without waiting for Redis: for a response path that must not pay the write."""
        expires_at = self._clock() + ttl_s
        if not self._accept(value, ttl_s):
            return
        self._memorize(key, value, expires_at)
        if (batch := self._usable_redis()) is not None:
            self._store(batch, key, value, expires_at, ttl_s, later=True).add_done_callback(
                self._written
            )

    def _written(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if (exc := future.exception()) is not None:
            self._redis_failed("write", exc)
        elif self.metrics is not None and (evicted := future.result()) > 0:
            self.metrics.cache_evictions.inc(evicted)

    async def aclose(self) -> None:
        """Wait for the Redis writes `put_soon` started."""
        if self._batch is not None:
            await self._batch.drain()

    def _accept(self, value: CachedResponse, ttl_s: float) -> bool:
        return ttl_s > 0 and value.size <= self.max_entry_bytes

    def _memorize(self, key: str, value: CachedResponse, expires_at: float) -> None:
        self.memory.put(key, value, expires_at)

    async def _write(
        self, key: str, value: CachedResponse, expires_at: float, ttl_s: float
    ) -> None:
        batch = self._usable_redis()
        if batch is None:
            return
        stored = self._store(batch, key, value, expires_at, ttl_s)
        stored.add_done_callback(self._written)  # counts and logs a failure, a timeout's too
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await within(stored, self.redis_timeout_s)

    def _usable_redis(self) -> CommandBatcher | None:
        """Redis (through this cache's batcher), unless there is none or it failed within the
        backoff period."""
        return self._batch if self._clock() >= self._redis_down_until else None

    def _count(self, level: Level, hit: bool) -> None:
        if self._lookups:
            self._lookups[level, hit].inc()

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        self.redis_errors += 1
        if what != "decode":  # a bad entry says nothing about Redis's health
            self._redis_down_until = self._clock() + self.redis_backoff_s
        if self.metrics is not None:
            self.metrics.cache_errors.labels(what).inc()
        now = time.monotonic()
        if now - self._last_error_log < self._error_log_interval_s:
            self._suppressed += 1
            return
        log.warning(
            "response cache: Redis %s failed (%s: %s); serving without the shared level "
            "(%d similar errors not logged since the last message)",
            what,
            type(exc).__name__,
            exc,
            self._suppressed,
        )
        self._last_error_log, self._suppressed = now, 0

    def _store(
        self,
        batch: CommandBatcher,
        key: str,
        value: CachedResponse,
        expires_at: float,
        ttl_s: float,
        *,
        later: bool = False,
    ) -> asyncio.Future[Any]:
        """The put script's call for `key`: the entry stored in its shard, within the shard's
        share of `redis_max_bytes`; its result is the number of entries evicted."""
        assert self._put_script is not None
        shard = rediskeys.cache_shard(key)
        keys = (
            rediskeys.cache_entry(key),
            rediskeys.cache_index(shard),
            rediskeys.cache_sizes(shard),
        )
        args = (
            value.encode(expires_at),
            max(1, round(ttl_s * 1000)),
            round(expires_at * 1000),
            round((expires_at - ttl_s) * 1000),  # now: the callers read the clock for expires_at
            self.redis_max_bytes // rediskeys.CACHE_SHARDS,
        )
        return batch.evalsha(self._put_script, keys, args, later=later)
