"""The cold tier: raw spend entries, once acked and older than `stream_retention_s`, appended to
`<archive_dir>/<team>/<YYYY-MM-DD>.jsonl.gz` and then trimmed from the team's stream.

Per team, under a lease so one replica archives a team at a time: find the bound below which
every entry is acked by every group, append the entries after the cursor to the day files (one
gzip member per run, fsync'd), and only then advance the cursor and XTRIM MINID to it. A crash
between the fsync and the cursor update archives those entries again on the next run; each line
carries its stream id (`_stream_id`) and `archiveformat.read_archive` drops repeats. Files are
named by the UTC day of the stream id (when the entry was appended), so each file is in id
order. The file format is `gateway.archiveformat`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import orjson
from redis.exceptions import ResponseError

from gateway import rediskeys
from gateway.aggregator.consumer import load_lua
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.archiveformat import STREAM_ID_FIELD, gzip_members

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from gateway.config.model import AggregatorConfig

log = logging.getLogger("spendgate.aggregator.archive")

_CHUNK = 1000  # entries per XRANGE, per gzip member and per cursor update
_LEASE_MS = 600_000
_MAX_SEQ = 2**64 - 1
_MAX_INTERVAL_S = 60.0


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: object) -> StreamId:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def next(self) -> StreamId:
        return StreamId(self.ms + 1, 0) if self.seq == _MAX_SEQ else StreamId(self.ms, self.seq + 1)

    def prev(self) -> StreamId:
        return StreamId(self.ms, self.seq - 1) if self.seq else StreamId(self.ms - 1, _MAX_SEQ)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


class Archiver:
    def __init__(
        self,
        redis: Redis,
        config: AggregatorConfig,
        *,
        clock: Callable[[], float] = time.time,
        metrics: AggregatorMetrics | None = None,
        chunk: int = _CHUNK,
    ) -> None:
        self.redis = redis
        self.config = config  # reassignable, as the aggregator's
        self.clock = clock
        self.metrics = metrics or AggregatorMetrics()
        self.chunk = chunk
        self._lease: AsyncScript = redis.register_script(load_lua("lease.lua"))
        self._checked: set[Path] = set()  # files whose tail was verified by this process

    async def archive_once(self, now: float | None = None) -> int:
        """Archive and trim every team's stream; returns the number of entries archived."""
        at = self.clock() if now is None else now
        teams = sorted(_text(t) for t in await self.redis.smembers(rediskeys.streams_registry()))
        total = 0
        for team in teams:
            total += await self.archive_team(team, at)
        return total

    async def archive_team(self, team: str, now: float) -> int:
        lease, token = rediskeys.archive_lock(team), secrets.token_hex(8)
        if not await self.redis.set(lease, token, nx=True, px=_LEASE_MS):
            return 0  # another replica is archiving this team
        try:
            return await self._archive(team, now, lease, token)
        finally:
            await self._lease(keys=[lease], args=[token])

    async def run(self, stop: asyncio.Event, interval_s: float | None = None) -> None:
        """Archive every `interval_s` (default: `archive_interval` of the current config, so a
        reload takes effect within a second) until `stop` is set; failures are logged and
        retried on the next run."""
        from redis.exceptions import RedisError

        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.archive_once()
            except (RedisError, OSError) as exc:
                log.warning("archive run failed (retrying on the next run): %s", exc)
            while not stop.is_set():
                wait = archive_interval(self.config) if interval_s is None else interval_s
                left = started + wait - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(left, 1.0))

    async def _archive(self, team: str, now: float, lease: str, token: str) -> int:
        stream, cursor_key = rediskeys.events_stream(team), rediskeys.archive_cursor(team)
        bound = await self._safe_bound(stream, now)
        raw_cursor = await self.redis.get(cursor_key)
        cursor = StreamId.parse(raw_cursor) if raw_cursor else StreamId(0, 0)
        if raw_cursor:  # a crash after the cursor update, before the trim, left these behind
            await self.redis.xtrim(stream, minid=str(cursor.next()), approximate=False)
        total = 0
        while bound is not None and cursor.next() < bound:
            entries = await self.redis.xrange(
                stream, min=str(cursor.next()), max=str(bound.prev()), count=self.chunk
            )
            if not entries:
                break
            last = StreamId.parse(entries[-1][0])
            await asyncio.to_thread(self._write, team, entries)
            # Only after the lines are on disk: advance the cursor, then drop what it covers.
            await self.redis.set(cursor_key, str(last))
            trimmed = await self.redis.xtrim(stream, minid=str(last.next()), approximate=False)
            self.metrics.archived.inc(len(entries))
            self.metrics.trimmed.inc(int(trimmed or 0))
            total += len(entries)
            cursor = last
            if len(entries) < self.chunk:
                break
            if not await self._lease(keys=[lease], args=[token, _LEASE_MS]):
                log.warning("lost the archive lease of team %s; stopping this run", team)
                break
        if total:
            log.info("archived %d spend entries of team %s up to %s", total, team, cursor)
        return total

    async def _safe_bound(self, stream: str, now: float) -> StreamId | None:
        """Exclusive upper id of what may be archived: older than the retention and acked by every
        group (below its oldest pending entry and at most its last delivered one)."""
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:  # no such stream
            return None
        if not groups:
            return None  # nothing is known to be consumed
        bound = StreamId(int((now - self.config.stream_retention_s) * 1000), 0)
        for info in groups:
            bound = min(bound, StreamId.parse(info["last-delivered-id"]).next())
            if int(info.get("pending") or 0):
                summary = await self.redis.xpending(stream, info["name"])
                if summary.get("min"):
                    bound = min(bound, StreamId.parse(summary["min"]))
        return bound

    def _write(self, team: str, entries: Sequence[tuple[Any, Mapping[Any, Any] | None]]) -> None:
        by_day: dict[str, list[bytes]] = {}
        for raw_id, fields in entries:
            entry_id = StreamId.parse(raw_id)
            record = {STREAM_ID_FIELD: str(entry_id)}
            record.update({_text(k): _text(v) for k, v in (fields or {}).items()})
            day = time.strftime("%Y-%m-%d", time.gmtime(entry_id.ms // 1000))
            by_day.setdefault(day, []).append(orjson.dumps(record) + b"\n")
        directory = Path(self.config.archive_dir) / team_dirname(team)
        directory.mkdir(parents=True, exist_ok=True)
        for day, lines in by_day.items():
            self._append(directory / f"{day}.jsonl.gz", b"".join(lines))

    def _append(self, path: Path, data: bytes) -> None:
        created = not path.exists()
        if not created and path not in self._checked:
            _repair_tail(path)
        self._checked.add(path)
        with path.open("ab") as f:
            f.write(gzip.compress(data, mtime=0))
            f.flush()
            os.fsync(f.fileno())
        if created:  # make the new directory entry durable too
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def archive_interval(config: AggregatorConfig) -> float:
    """How often to archive: often enough that a stream holds little beyond its retention."""
    return max(1.0, min(_MAX_INTERVAL_S, config.stream_retention_s / 4))


def team_dirname(team: str) -> str:
    """A team name as one safe path component (no separators, no leading dot)."""
    name = quote(team, safe="-_.@+=")
    return "%2E" + name[1:] if name.startswith(".") else name


def _repair_tail(path: Path) -> None:
    """Cut a torn gzip member (a crash mid-append) off the end, so appends stay readable."""
    with path.open("rb") as f:
        valid = 0
        for end, _data in gzip_members(f):
            valid = end
    size = path.stat().st_size
    if size > valid:
        log.warning("archive %s: dropping %d bytes of a torn write at its end", path, size - valid)
        with path.open("r+b") as f:
            f.truncate(valid)
            f.flush()
            os.fsync(f.fileno())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
