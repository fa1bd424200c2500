"""The local append-only spool: settles that could not reach Redis, replayed when it returns.

One JSON line per settle in `<dir>/spool-<n>.jsonl`. Lines go to the OS at once (a process crash
loses nothing) and are fsync'd on a schedule (bounding what a machine crash can lose). Replay
settles every line through the ledger, idempotent by event id, so a crash mid-replay only means
replaying again; a segment is deleted once all of it went through. New lines go to a new segment
while old ones are replayed. When the spool is full it refuses new lines, loudly, rather than
dropping old ones. One process per directory: worker i of `serve --workers N` spools in
`<spool_dir>/worker-<i>`, and segments no process of a run will replay are adopted at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway.budgets.definitions import budget_from_dict, budget_to_dict
from gateway.budgets.ledger import BudgetLedger, Reservation, SettleResult
from gateway.budgets.periods import period_id
from gateway.config.model import BudgetConfig
from gateway.types import SpendEvent

log = logging.getLogger("spendgate.spool")

_SEGMENT = re.compile(r"spool-(\d+)\.jsonl")
_WORKER_DIR = re.compile(r"worker-(\d+)")
_REJECTED = "rejected.jsonl"  # lines that parse but are not settles: kept for a human
_REFUSAL_LOG_EVERY_S = 10.0
# Replay reads a segment whole, and re-settles a whole segment after an interrupted replay.
_SEGMENT_MAX_BYTES = 16 * 1024 * 1024
_FORMAT = 1

OnSettled = Callable[[SettleResult], Awaitable[None]]
OnSize = Callable[[int], None]  # told the spool's size in bytes whenever it changes


def settle_entry(
    reservation: Reservation | None,
    team: str,
    request_id: str,
    budgets: Sequence[BudgetConfig],
    event: SpendEvent,
) -> dict[str, Any]:
    """What `BudgetLedger.settle` would have done, as one JSON-ready spool line: the budgets
    and periods are fixed now (the reservation's, else those of the event's time)."""
    if reservation is not None:
        budgets, period_ids = reservation.budgets, reservation.period_ids
    else:
        at = datetime.fromtimestamp(event.ts_ms / 1000, UTC)
        period_ids = tuple(period_id(b.period, at) for b in budgets)
    return {
        "v": _FORMAT,
        "team": team,
        "request_id": request_id,
        "budgets": [budget_to_dict(b) for b in budgets],
        "period_ids": list(period_ids),
        "event": event.to_fields(),
    }


async def replay_entry(ledger: BudgetLedger, entry: Mapping[str, Any]) -> SettleResult:
    """Settle one spool line. ValueError/KeyError/TypeError: not a settle line."""
    if entry.get("v") != _FORMAT:
        raise ValueError(f"unknown spool format {entry.get('v')!r}")
    budgets = tuple(budget_from_dict(b) for b in entry["budgets"])
    period_ids = tuple(str(p) for p in entry["period_ids"])
    if len(period_ids) != len(budgets):
        raise ValueError("budgets and period_ids differ in length")
    event = SpendEvent.from_fields(entry["event"])
    return await ledger.settle_periods(
        str(entry["team"]), str(entry["request_id"]), budgets, period_ids, event
    )


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        fsync_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_size: OnSize | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.fsync_interval_s = fsync_interval_s
        self._clock = clock
        existing = self._segments()
        # Never append to a segment a previous process left: its last line may be torn.
        self._next = max((n for n, _ in existing), default=-1) + 1
        self._bytes = sum(path.stat().st_size for _, path in existing)
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_bytes = 0
        self._dirty = False
        self._last_sync = clock()
        self._last_refusal_log = float("-inf")
        self._lock = asyncio.Lock()
        self.appended = 0
        self.refused = 0  # lines refused because the spool was full
        self.failed = 0  # lines the disk would not take
        self.skipped = 0  # torn or unreadable lines met during replay
        self._on_size = on_size
        self._resized()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def pending(self) -> bool:
        """Whether anything waits to be replayed."""
        return self._bytes > 0

    def append(self, entry: Mapping[str, Any]) -> bool:
        """Add one line (see `settle_entry`). False, with an error logged, if the spool is full
        or the disk fails: never raises, so a request is not failed by its own accounting."""
        line = orjson.dumps(entry) + b"\n"
        if self._bytes + len(line) > self.max_bytes:
            self._refuse()
            return False
        try:
            if self._active_bytes >= _SEGMENT_MAX_BYTES:
                self.close()
            fd = self._fd if self._fd is not None else self._open_segment()
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            # A full or failing disk: the request must not fail too, but this must be heard.
            self.failed += 1
            log.error(
                "spool write to %s failed (%s): a spend event is NOT recorded", self.directory, exc
            )
            return False
        self._bytes += len(line)
        self._active_bytes += len(line)
        self._dirty = True
        self.appended += 1
        self._resized()
        self.maybe_sync()
        return True

    def append_settle(
        self,
        reservation: Reservation | None,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        event: SpendEvent,
    ) -> bool:
        """Spool a settle that `BudgetLedger.settle` could not deliver."""
        return self.append(settle_entry(reservation, team, request_id, budgets, event))

    def maybe_sync(self) -> None:
        """fsync the active segment if it has unsynced lines and the interval has passed."""
        if self._dirty and self._clock() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = self._clock()

    def close(self) -> None:
        """fsync and close the active segment (what is spooled stays for the next process)."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
        self._fd, self._active, self._active_bytes = None, None, 0

    async def replay(self, ledger: BudgetLedger, on_settled: OnSettled | None = None) -> int:
        """Settle every spooled line; return how many were settled (duplicates included).

        A Redis error stops the replay and propagates: the segment stays and is replayed again
        next time (lines already settled then count as duplicates). Closed segments go first;
        the active one is rotated only once they are all through, so an outage that keeps
        failing replays does not pile up segments.
        """
        async with self._lock:
            done = await self._replay_closed(ledger, on_settled)
            if self._active_bytes > 0:
                self.close()
                done += await self._replay_closed(ledger, on_settled)
            if done:
                ledger.forget_streams()  # Redis may have come back empty: register again
            return done

    async def maintain(
        self, ledger: BudgetLedger, interval_s: float = 1.0, on_settled: OnSettled | None = None
    ) -> None:
        """Until cancelled: fsync on schedule and replay whenever something is pending."""
        while True:
            self.maybe_sync()
            if self.pending():
                try:
                    replayed = await self.replay(ledger, on_settled)
                except (RedisError, OSError) as exc:
                    log.debug("spool replay deferred: %s", exc)
                else:
                    if replayed:
                        log.warning("spool: replayed %d settles into Redis", replayed)
            await asyncio.sleep(interval_s)

    async def _replay_closed(self, ledger: BudgetLedger, on_settled: OnSettled | None) -> int:
        done = 0
        for _, path in self._segments():
            if path == self._active:
                continue
            size = path.stat().st_size
            # Off the event loop: a segment may be megabytes, and requests go on meanwhile.
            for entry in await asyncio.to_thread(self._read, path):
                try:
                    result = await replay_entry(ledger, entry)
                except (ValueError, KeyError, TypeError) as exc:
                    self._reject(path, entry, exc)
                    continue
                done += 1
                if on_settled is not None:
                    await on_settled(result)
            path.unlink()
            self._bytes -= size
            self._resized()
        return done

    def _resized(self) -> None:
        if self._on_size is not None:
            self._on_size(self._bytes)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.skipped += 1
                if number == len(lines):  # no newline after it: a write cut short by a crash
                    log.warning("spool %s: torn last line ignored", path.name)
                else:
                    log.error("spool %s line %d is not JSON; ignored", path.name, number)
                    self._keep_rejected(line)
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                self.skipped += 1
                self._keep_rejected(line)
        return entries

    def _reject(self, path: Path, entry: Mapping[str, Any], exc: Exception) -> None:
        self.skipped += 1
        log.error("spool %s: a line is not a settle (%s); kept in %s", path.name, exc, _REJECTED)
        self._keep_rejected(orjson.dumps(entry))

    def _keep_rejected(self, line: bytes) -> None:
        with (self.directory / _REJECTED).open("ab") as f:
            f.write(line + b"\n")

    def _refuse(self) -> None:
        self.refused += 1
        now = self._clock()
        if now - self._last_refusal_log >= _REFUSAL_LOG_EVERY_S:
            self._last_refusal_log = now
            log.error(
                "SPOOL FULL (%d of %d bytes in %s): %d spend event(s) refused and NOT recorded; "
                "restore Redis or raise store.spool_max_bytes",
                self._bytes,
                self.max_bytes,
                self.directory,
                self.refused,
            )

    def _open_segment(self) -> int:
        self._active = self.directory / f"spool-{self._next}.jsonl"
        self._next += 1
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._active_bytes = 0
        # Make the new file's directory entry durable too, or an fsync'd segment can vanish.
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self._fd

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)


def process_directory(base: str | os.PathLike[str], worker: int | None) -> Path:
    """Where one gateway process spools: `base` itself when it runs alone, `base/worker-<i>`
    for worker i of `serve --workers N`, so no two processes append to or replay one segment."""
    return Path(base) if worker is None else Path(base) / f"worker-{worker}"


def orphaned_directories(
    base: str | os.PathLike[str], worker: int | None, workers: int
) -> list[Path]:
    """Spool directories no process of this run uses: those of worker slots >= `workers` and,
    with workers, `base` itself; without, every worker's. Their segments are adopted by the
    lone process or by worker 0 (see `adopt_segments`), so changing `--workers` strands none."""
    base = Path(base)
    if worker not in (None, 0) or not base.is_dir():
        return []
    found = [] if worker is None else [base]
    for path in base.iterdir():
        match = _WORKER_DIR.fullmatch(path.name)
        if match and path.is_dir() and (worker is None or int(match.group(1)) >= workers):
            found.append(path)
    return sorted(found)


def adopt_segments(directory: Path, sources: Iterable[Path]) -> int:
    """Move the segments found in `sources` into `directory`, numbered after its own; call it
    before a `Spool` opens `directory`. Return how many moved."""
    sources = list(sources)
    if not sources:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in directory.iterdir() if (m := _SEGMENT.fullmatch(p.name))]
    number = max(taken, default=-1) + 1
    moved = 0
    for source in sources:
        for path in sorted(source.iterdir()):
            if _SEGMENT.fullmatch(path.name) and path.is_file():
                path.rename(directory / f"spool-{number}.jsonl")
                number += 1
                moved += 1
    if moved:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.warning("spool: adopted %d segment(s) left by another process layout", moved)
    return moved
