"""The aggregator: one consumer group over every team's spend stream, rollups applied exactly once.

Each batch is summed in Python (`RollupBatch`) and written by `lua/apply.lua` together with the
XACK of its entries, in one atomic script call in the team's slot. The script writes only if
every entry is still pending, so an entry another consumer reclaimed and applied is never
counted twice, and a crash before the call loses nothing: the entries stay pending and are
reclaimed (XAUTOCLAIM) once idle for `claim_idle_s`. A consumer that lost its store between
reading a batch and applying it (a connection dropped, Redis restarted from its AOF) re-reads
its own pending entries first when the store is back, so an outage delays no rollup by
`claim_idle_s`. Unparseable entries are acked and copied to
the team's dead-letter stream so they never block the group.

On a Redis Cluster one XREADGROUP cannot name streams of several slots, so an idle aggregator
waits with one blocking read per slot that has a team stream, and applies what any of them
brings as soon as it comes (`_SlotReads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import rediskeys
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.aggregator.rollups import RollupBatch, SeriesSpec
from gateway.slices import NO_SLICES, Slices
from gateway.store.cluster import by_slot, is_cluster
from gateway.store.connect import batcher_for
from gateway.types import SpendEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from gateway.aggregator.prices import PriceList
    from gateway.config.model import AggregatorConfig

log = logging.getLogger("spendgate.aggregator")

# (entry id, fields): the fields as redis-py returns them (a mapping), or as the pipelined
# connection does (a flat list: name, value, ...); None for an entry deleted while pending.
Entry = tuple[Any, Mapping[Any, Any] | list[Any] | None]

_REGISTRY_REFRESH_S = 1.0  # a new team's stream is picked up within this (one SMEMBERS)
_STATS_INTERVAL_S = 10.0
_RECLAIM_PAGES = 10  # XAUTOCLAIM pages per stream per reclaim round, so one stream cannot starve
_PRUNE_IDLE_MS = 3_600_000  # consumers idle this long with nothing pending are removed
_MAX_BACKOFF_S = 5.0
# Summing a batch is CPU work; embedded in `serve` it shares the event loop with requests, so
# it hands the loop back every this many events (a few milliseconds).
_YIELD_EVERY = 100


class PoisonEntry(ValueError):
    """A stream entry that is not a valid spend event of the stream's team."""


def default_consumer_name() -> str:
    """Unique per process: a restarted aggregator never inherits a dead one's pending entries
    by name; they are reclaimed by idle time instead."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def load_lua(name: str) -> str:
    return (importlib.resources.files("gateway.aggregator") / "lua" / name).read_text()


def parse_entry(team: str, fields: Mapping[Any, Any] | list[Any] | None) -> SpendEvent:
    if not fields:
        raise PoisonEntry("entry has no fields (deleted or empty)")
    try:
        if isinstance(fields, list):  # a raw reply: name, value, name, value...
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        event = SpendEvent.from_fields(fields)
    except (TypeError, ValueError) as exc:
        raise PoisonEntry(f"not a spend event: {exc}") from exc
    if event.team != team:
        raise PoisonEntry(f"event of team {event.team!r} in the stream of team {team!r}")
    return event


class Aggregator:
    def __init__(
        self,
        redis: Redis,
        config: AggregatorConfig,
        *,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: AggregatorMetrics | None = None,
        group: str = rediskeys.EVENTS_GROUP,
        prices: PriceList | None = None,
        series: SeriesSpec | None = None,
        slices: Slices = NO_SLICES,
    ) -> None:
        """`clock`: the wall clock (epoch seconds) that rollup lifetimes are measured against;
        the loop's own timers run on the monotonic clock. `series`: the fine buckets anomaly
        detection reads (none when it is off). `slices`: how a process of its own gives its
        core way during an apply's work (none inside a gateway)."""
        self.redis = redis
        self.config = config  # reassignable: the embedded aggregator follows config reloads
        self.prices = prices  # prices the FOCUS lines; reassignable like `config`
        self.series = series  # reassignable like `config`
        self.slices = slices
        self.consumer = consumer or default_consumer_name()
        self.clock = clock
        self.metrics = metrics or AggregatorMetrics()
        self.group = group
        self._apply_script: AsyncScript = redis.register_script(load_lua("apply.lua"))
        # The apply goes over the request path's pipelined connection (`store/batch.py`): a
        # call with a few hundred arguments costs ~40 % less client CPU there than through
        # redis-py's command path, and the aggregator's bursts share a core with others.
        self._batch = batcher_for(redis)
        self._prune: AsyncScript = redis.register_script(load_lua("prune_consumer.lua"))
        self._streams: dict[str, str] = {}  # stream key -> team
        self._claim_cursor: dict[str, str] = {}
        self._next_refresh = 0.0
        self._next_reclaim = 0.0
        self._next_stats = 0.0
        self._recovering = False  # an error may have left entries read but unapplied
        self._slot_reads = _SlotReads() if is_cluster(redis) else None

    @property
    def teams(self) -> list[str]:
        return sorted(self._streams.values())

    async def refresh_streams(self) -> None:
        """Join the group (creating it, from the first entry) on every registered team stream."""
        registered = {_text(t) for t in await self.redis.smembers(rediskeys.streams_registry())}
        for team in sorted(registered - set(self._streams.values())):
            stream = rediskeys.events_stream(team)
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._streams[stream] = team

    async def step(self) -> int:
        """Read one batch per team stream and apply it; block (up to block_ms) only when no
        stream had anything. Returns the number of entries this consumer applied."""
        now = time.monotonic()
        if now >= self._next_refresh:
            await self.refresh_streams()
            self._next_refresh = now + _REGISTRY_REFRESH_S
        handled = 0
        if self._recovering:
            handled += await self.recover()
            self._recovering = False
        if now >= self._next_reclaim:
            handled += await self.reclaim()
            self._next_reclaim = now + max(self.config.claim_idle_s / 2, 0.1)
        if now >= self._next_stats:
            await self.update_stats()
            self._next_stats = now + _STATS_INTERVAL_S
        if not self._streams:
            await asyncio.sleep(self.config.block_ms / 1000)
            return handled
        self.slices.give_way()
        batches = await self._read_each()
        self.slices.give_way()  # parsing the reply was work too
        if self._slot_reads is not None:
            batches += self._slot_reads.harvest(self._batches)
        if not batches and not handled:
            batches = await self._read_blocking()
        if batches:
            done = await asyncio.gather(*(self.apply(team, entries) for team, entries in batches))
            handled += sum(done)
        return handled

    async def apply(self, team: str, entries: Sequence[Entry]) -> int:
        """Apply entries read (or claimed) from the team's stream; those another consumer applied
        meanwhile are skipped. Returns how many this call applied (poison included)."""
        started = time.perf_counter()
        give_way = self.slices.give_way
        good: list[tuple[str, SpendEvent]] = []
        poison: list[tuple[str, str]] = []
        for n, (raw_id, fields) in enumerate(entries, 1):
            give_way()
            entry_id = _text(raw_id)
            try:
                good.append((entry_id, parse_entry(team, fields)))
            except PoisonEntry as exc:
                poison.append((entry_id, str(exc)))
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        while good or poison:
            batch = RollupBatch(self.prices, self.series, self.slices)
            for n, (_, event) in enumerate(good, 1):
                give_way()
                batch.add(event)
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            keys, args = self._script_args(team, batch, good, poison)
            give_way()  # before the arguments are packed and written
            status, detail = await self._apply(keys, args)
            give_way()
            if status == 1:
                self._record(team, len(good), poison, time.perf_counter() - started)
                return len(good) + len(poison)
            stale = {_text(i) for i in detail}
            self.metrics.events.labels("stale").inc(len(stale))
            good = [g for g in good if g[0] not in stale]
            poison = [p for p in poison if p[0] not in stale]
        return 0

    async def recover(self) -> int:
        """Apply the entries delivered to this consumer and still pending (XREADGROUP from id
        0 reads a consumer's own pending list), page by page."""
        handled = 0
        for stream, team in list(self._streams.items()):
            start = "0"
            while True:
                reply = await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: start}, count=self.config.batch_size
                )
                if not (batches := self._batches(reply)):
                    break
                ((_, entries),) = batches
                handled += await self.apply(team, entries)
                start = _text(entries[-1][0])
        return handled

    async def reclaim(self) -> int:
        """Claim and apply entries pending longer than claim_idle_s (their consumer died)."""
        min_idle_ms = int(self.config.claim_idle_s * 1000)
        handled = 0
        for stream, team in list(self._streams.items()):
            start = self._claim_cursor.get(stream, "0-0")
            for _ in range(_RECLAIM_PAGES):
                reply = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.consumer,
                    min_idle_ms,
                    start,
                    count=self.config.batch_size,
                )
                start, claimed = _text(reply[0]), reply[1]
                if claimed:
                    self.metrics.reclaimed.inc(len(claimed))
                    log.info("reclaimed %d idle entries of team %s", len(claimed), team)
                    handled += await self.apply(team, claimed)
                if start == "0-0":
                    break
            self._claim_cursor[stream] = start
            await self._prune_consumers(stream)
        return handled

    async def update_stats(self) -> None:
        """Lag (not yet delivered) and pending (delivered, unapplied) per team, as gauges."""
        for stream, team in list(self._streams.items()):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:  # the stream vanished (FLUSHDB); the next refresh re-creates
                continue
            for info in groups:
                if _text(info.get("name", b"")) != self.group:
                    continue
                self.metrics.pending.labels(team).set(int(info.get("pending") or 0))
                lag = info.get("lag")
                if lag is not None:
                    self.metrics.lag.labels(team).set(int(lag))

    async def run(self, stop: asyncio.Event) -> None:
        """Step until `stop` is set; store outages are logged and retried with backoff."""
        try:
            await self._run(stop)
        finally:
            if self._slot_reads is not None:
                await self._slot_reads.aclose()

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                handled = await self.step()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._recovering = True
                log.warning("aggregator: store unavailable (%s); retrying in %.1fs", exc, backoff)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    self._recovering = True
                    log.error("aggregator: redis refused a command: %s", exc)
                else:  # a stream or group was deleted under us: rejoin everything
                    self._streams.clear()
                    self._next_refresh = 0.0
                    continue
            except RedisError as exc:
                self._recovering = True
                log.error("aggregator: %s", exc)
            else:
                backoff = 0.1
                if 0 < handled < self.config.batch_size and self.config.linger_ms:
                    # A trickle: let it gather, so the next apply carries more events for the
                    # same fixed cost (a full batch means a backlog: read again at once).
                    await _sleep_or_stop(stop, self.config.linger_ms / 1000)
                continue
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _read_each(self) -> list[tuple[str, Sequence[Entry]]]:
        # Over the pipelined connection, as the apply: at a trickle redis-py's pipeline cost
        # as much client CPU as the read-and-apply's own work.
        group, consumer, count = self.group, self.consumer, self.config.batch_size
        replies = await asyncio.gather(
            *(
                self._batch.execute(
                    "XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", stream, ">"
                )
                for stream in self._streams
            )
        )
        return [batch for reply in replies for batch in self._batches(reply)]

    async def _read_blocking(self) -> list[tuple[str, Sequence[Entry]]]:
        if self._slot_reads is not None:  # a cluster: one read per slot
            return await self._slot_reads.wait(self, self._batches)
        # One command over every stream (a single Redis, Sentinel, the local store).
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self._streams, ">"),
            count=self.config.batch_size,
            block=self.config.block_ms,
        )
        return self._batches(reply)

    async def _apply(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        return await self._batch.evalsha(self._apply_script, keys, args)

    def _batches(self, reply: Any) -> list[tuple[str, Sequence[Entry]]]:
        out = []
        for stream, entries in reply or ():
            team = self._streams.get(_text(stream))
            if team is not None and entries:
                out.append((team, entries))
        return out

    def _script_args(
        self,
        team: str,
        batch: RollupBatch,
        good: Sequence[tuple[str, SpendEvent]],
        poison: Sequence[tuple[str, str]],
    ) -> tuple[list[str], list[str | int]]:
        cells = batch.items()
        keys = [rediskeys.events_stream(team), rediskeys.events_dead_letter(team)]
        keys += (key for key, _ in cells)
        first, last = _span(good, poison)
        args: list[str | int] = [self.group, self.consumer, first, last]
        args += [len(good), *(entry_id for entry_id, _ in good)]
        args.append(len(poison))
        for entry_id, reason in poison:
            args += [entry_id, reason[:500]]
        args.append(rediskeys.DEAD_LETTER_MAXLEN)
        # Lifetimes go to Redis relative to our clock (a bucket already past its end of life
        # gets 0: dropped), so an injected clock and Redis's own agree.
        now = int(self.clock())
        give_way = self.slices.give_way
        for key, sums in cells:
            give_way()
            args += [max(batch.expiry[key] - now, 0), len(sums)]
            for hash_field, amount in sums.items():
                args += [hash_field, amount]
        return keys, args

    def _record(
        self, team: str, applied: int, poison: Sequence[tuple[str, str]], seconds: float
    ) -> None:
        self.metrics.batches.inc()
        self.metrics.apply_seconds.observe(seconds)
        if applied:
            self.metrics.events.labels("applied").inc(applied)
        if poison:
            self.metrics.events.labels("poison").inc(len(poison))
            dead = rediskeys.events_dead_letter(team)
            for entry_id, reason in poison:
                log.warning(
                    "poison spend entry %s of team %s moved to %s: %s", entry_id, team, dead, reason
                )

    async def _prune_consumers(self, stream: str) -> None:
        try:
            consumers = await self.redis.xinfo_consumers(stream, self.group)
        except ResponseError:
            return
        for info in consumers:
            name = _text(info.get("name", b""))
            idle = int(info.get("idle") or 0)
            if name != self.consumer and not info.get("pending") and idle > _PRUNE_IDLE_MS:
                await self._prune(keys=[stream], args=[self.group, name])


class _SlotReads:
    """An idle aggregator's blocking reads on a cluster: one XREADGROUP per slot with team
    streams, all in flight at once. `wait` returns as soon as one brings entries; the others
    stay in flight and are harvested when they answer (each waits at most block_ms), so no
    read is ever abandoned with entries delivered to it. Those of a read cut short (shutdown,
    a lost connection) stay pending and are reclaimed like any dead consumer's."""

    def __init__(self) -> None:
        self._reads: dict[int, asyncio.Task[Any]] = {}

    async def wait(
        self, aggregator: Aggregator, batches: Callable[[Any], list[tuple[str, Sequence[Entry]]]]
    ) -> list[tuple[str, Sequence[Entry]]]:
        config = aggregator.config
        for slot, streams in by_slot(aggregator._streams).items():
            if slot not in self._reads:
                read = aggregator.redis.xreadgroup(
                    aggregator.group,
                    aggregator.consumer,
                    dict.fromkeys(streams, ">"),
                    count=config.batch_size,
                    block=config.block_ms,
                )
                self._reads[slot] = asyncio.ensure_future(read)
        if self._reads:
            await asyncio.wait(
                list(self._reads.values()),
                timeout=config.block_ms / 1000 + 1.0,
                return_when=asyncio.FIRST_COMPLETED,
            )
        return self.harvest(batches)

    def harvest(
        self, batches: Callable[[Any], list[tuple[str, Sequence[Entry]]]]
    ) -> list[tuple[str, Sequence[Entry]]]:
        """What the reads that have answered brought; the first error after them all."""
        out: list[tuple[str, Sequence[Entry]]] = []
        error: BaseException | None = None
        for slot, read in list(self._reads.items()):
            if not read.done():
                continue
            del self._reads[slot]
            if read.cancelled():
                continue
            if (exc := read.exception()) is not None:
                error = error or exc
                continue
            out += batches(read.result())
        if error is not None and not out:
            raise error
        return out

    async def aclose(self) -> None:
        for read in self._reads.values():
            read.cancel()
        await asyncio.gather(*self._reads.values(), return_exceptions=True)
        self._reads.clear()


def _span(*batches: Sequence[tuple[str, object]]) -> tuple[str, str]:
    """The first and last entry id of batches that are each in stream order (as reads and
    claims return them): the range apply.lua lists this consumer's pending entries in. Were
    they not in order, the script would look the ones outside it up one by one: slower, not
    wrong."""
    firsts = [batch[0][0] for batch in batches if batch]
    lasts = [batch[-1][0] for batch in batches if batch]
    return min(firsts, key=_id_order), max(lasts, key=_id_order)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
