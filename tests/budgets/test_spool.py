"""The spool: settles that could not reach Redis (a client on a closed port gives real connection
errors) are kept on disk and replayed exactly once in effect; torn lines, a full spool, fsync."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.budgets.ledger import BudgetLedger, SettleResult
from gateway.budgets.spool import Spool, settle_entry
from gateway.config.model import BudgetConfig
from gateway.store.connect import close_store, open_store
from gateway.types import SpendEvent
from tests.budgets.support import TEAM, FakeClock, budget

AMOUNT = 1_000_000


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nobody listens


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    r = await open_store(f"redis://127.0.0.1:{closed_port()}/0")
    yield r
    await close_store(r)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("spool-*.jsonl"))


def event(clock: FakeClock, n: int, cost: int) -> SpendEvent:
    return SpendEvent(
        event_id=f"ev-{n}",
        ts_ms=int(clock() * 1000),
        team=TEAM,
        request_id=f"req-{n}",
        cost_nano=cost,
        prompt_tokens=n,
        completion_tokens=2 * n,
    )


async def spent(r: Redis, b: BudgetConfig, period_id: str) -> dict[str, int]:
    raw = await r.hgetall(rediskeys.budget_counter(TEAM, b.name, period_id))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_outage_spool_then_exact_replay(
    real_store: Redis, dead_redis: Redis, tmp_path: Path, clock: FakeClock
) -> None:
    b = budget(limit_nano=100 * AMOUNT)
    live, down = BudgetLedger(real_store, clock=clock), BudgetLedger(dead_redis, clock=clock)
    spool = Spool(tmp_path, 1 << 20, 0.0)
    # Five requests reserved while Redis was up; then it went away before they settled, and
    # five more arrived during the outage (fail-open: no reservation at all).
    reservations = [await live.reserve(TEAM, f"req-{i}", [b], 2 * AMOUNT, 0, 900) for i in range(5)]
    costs = {}
    for i in range(10):
        res = reservations[i] if i < 5 else None
        ev = event(clock, i, AMOUNT + i)
        costs[ev.event_id] = ev.cost_nano
        with pytest.raises(RedisError):
            await down.settle(res, TEAM, f"req-{i}", [b], ev)
        assert spool.append_settle(res, TEAM, f"req-{i}", [b], ev)
    spool.close()
    segments_ = segments(tmp_path)
    assert len(segments_) == 1 and spool.pending()

    # Redis still down: the replay stops at the first line and keeps everything.
    with pytest.raises(RedisError):
        await spool.replay(down)
    assert spool.pending() and segments_[0].exists()

    backup = tmp_path / "backup"
    shutil.copy(segments_[0], backup)
    settled: list[SettleResult] = []

    async def on_settled(result: SettleResult) -> None:
        settled.append(result)

    assert await spool.replay(live, on_settled) == 10
    assert not spool.pending() and not segments_[0].exists()
    pid = reservations[0].period_ids[0]
    state = await spent(real_store, b, pid)
    assert state["spent_nano"] == sum(costs.values())
    assert state["spent_tokens"] == sum(3 * i for i in range(10))
    assert state["reserved_nano"] == 0
    assert sum(r.released for r in settled) == 5
    entries = await real_store.xrange(rediskeys.events_stream(TEAM))
    assert {
        SpendEvent.from_fields(f).event_id: SpendEvent.from_fields(f).cost_nano for _, f in entries
    } == costs

    # A crash after settling but before deleting the segment: replaying it again changes nothing.
    shutil.move(backup, segments_[0])
    again = Spool(tmp_path, 1 << 20, 0.0)
    settled.clear()
    assert await again.replay(live, on_settled) == 10
    assert all(r.duplicate for r in settled)
    assert (await spent(real_store, b, pid))["spent_nano"] == sum(costs.values())
    assert await real_store.xlen(rediskeys.events_stream(TEAM)) == 10
    assert await again.replay(live) == 0


async def test_torn_last_line_is_ignored(
    store: Redis, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = BudgetLedger(store, clock=clock)
    spool = Spool(tmp_path, 1 << 20, 1.0)
    for i in range(3):
        spool.append(settle_entry(None, TEAM, f"req-{i}", [], event(clock, i, AMOUNT)))
    spool.close()
    (segment,) = segments(tmp_path)
    with segment.open("ab") as f:  # the process died in the middle of a write
        f.write(orjson.dumps(settle_entry(None, TEAM, "req-9", [], event(clock, 9, 1)))[:40])

    restarted = Spool(tmp_path, 1 << 20, 1.0)
    restarted.append(settle_entry(None, TEAM, "req-3", [], event(clock, 3, AMOUNT)))
    # New lines never go after a torn one: the new process writes a new segment.
    assert len(segments(tmp_path)) == 2
    with caplog.at_level(logging.WARNING, "spendgate.spool"):
        assert await restarted.replay(ledger) == 4
    assert restarted.skipped == 1 and "torn last line" in caplog.text
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 4
    assert not segments(tmp_path)


async def test_lines_that_are_not_settles_are_kept_aside(
    store: Redis, tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path, 1 << 20, 1.0)
    spool.append({"v": 1, "team": TEAM})  # parses, but is no settle
    spool.append(settle_entry(None, TEAM, "req-1", [], event(clock, 1, AMOUNT)))
    assert await spool.replay(BudgetLedger(store, clock=clock)) == 1
    assert spool.skipped == 1
    assert orjson.loads((tmp_path / "rejected.jsonl").read_bytes()) == {"v": 1, "team": TEAM}


async def test_full_spool_refuses_new_lines_and_keeps_old_ones(
    store: Redis, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(orjson.dumps(settle_entry(None, TEAM, "req-0", [], event(clock, 0, AMOUNT)))) + 1
    spool = Spool(tmp_path, 3 * line + line // 2, 1.0)
    with caplog.at_level(logging.ERROR, "spendgate.spool"):
        accepted = [
            spool.append(settle_entry(None, TEAM, f"req-{i}", [], event(clock, i, AMOUNT)))
            for i in range(5)
        ]
    assert accepted == [True, True, True, False, False]
    assert spool.refused == 2 and "SPOOL FULL" in caplog.text
    assert caplog.text.count("SPOOL FULL") == 1  # loud, but not once per request
    assert await spool.replay(BudgetLedger(store, clock=clock)) == 3
    ids = {f[b"event_id"] for _, f in await store.xrange(rediskeys.events_stream(TEAM))}
    assert ids == {b"ev-0", b"ev-1", b"ev-2"}
    assert spool.append(settle_entry(None, TEAM, "req-5", [], event(clock, 5, AMOUNT)))


def test_fsync_on_schedule_and_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    clock = FakeClock()
    spool = Spool(tmp_path, 1 << 20, 1.0, clock=clock)
    spool.append({"n": 1})
    after_open = len(synced)  # the directory entry of the new segment
    spool.append({"n": 2})
    assert len(synced) == after_open
    clock.advance(1.0)
    spool.append({"n": 3})
    assert len(synced) == after_open + 1
    spool.append({"n": 4})
    spool.maybe_sync()
    assert len(synced) == after_open + 1
    spool.close()
    assert len(synced) == after_open + 2
    (segment,) = segments(tmp_path)
    assert [orjson.loads(x)["n"] for x in segment.read_bytes().splitlines()] == [1, 2, 3, 4]


class AppendingLedger(BudgetLedger):
    """Spools one more settle in the middle of a replay, as a request during recovery would."""

    spool: Spool
    clock_: FakeClock

    async def settle_periods(
        self,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        period_ids: Sequence[str],
        event_: SpendEvent,
    ) -> SettleResult:
        if event_.event_id == "ev-0":
            self.spool.append(settle_entry(None, TEAM, "req-7", [], event(self.clock_, 7, 7)))
        return await super().settle_periods(team, request_id, budgets, period_ids, event_)


async def test_lines_spooled_during_a_replay_wait_for_the_next(
    store: Redis, tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path, 1 << 20, 1.0)
    ledger = AppendingLedger(store, clock=clock)
    ledger.spool, ledger.clock_ = spool, clock
    for i in range(2):
        spool.append(settle_entry(None, TEAM, f"req-{i}", [], event(clock, i, AMOUNT)))
    assert await spool.replay(ledger) == 2
    assert spool.pending()
    assert await spool.replay(ledger) == 1
    assert not spool.pending()
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 3


async def test_maintain_replays_when_redis_is_back(
    store: Redis, dead_redis: Redis, tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path, 1 << 20, 0.01)
    spool.append(settle_entry(None, TEAM, "req-1", [], event(clock, 1, AMOUNT)))
    down = asyncio.create_task(spool.maintain(BudgetLedger(dead_redis, clock=clock), 0.01))
    await asyncio.sleep(0.1)
    down.cancel()
    await asyncio.gather(down, return_exceptions=True)
    assert spool.pending()
    # At most one extra segment per outage: failing replays do not rotate again and again.
    assert len(segments(tmp_path)) == 1
    up = asyncio.create_task(spool.maintain(BudgetLedger(store, clock=clock), 0.01))
    for _ in range(200):
        if not spool.pending():
            break
        await asyncio.sleep(0.01)
    up.cancel()
    await asyncio.gather(up, return_exceptions=True)
    assert not spool.pending()
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 1


def test_a_failing_disk_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, 1 << 20, 1.0)
    assert spool.append({"n": 1})

    def no_space(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with caplog.at_level(logging.ERROR, "spendgate.spool"):
        assert not spool.append({"n": 2})
    assert spool.failed == 1 and "NOT recorded" in caplog.text
    monkeypatch.undo()
    assert spool.append({"n": 3})
    spool.close()
    (segment,) = segments(tmp_path)
    assert [orjson.loads(x)["n"] for x in segment.read_bytes().splitlines()] == [1, 3]
