"""The cold tier: only acked entries past retention are archived and trimmed; a crash between
file write and cursor update duplicates lines that `read_archive` drops; torn tails are cut."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.archive import Archiver, team_dirname
from gateway.aggregator.consumer import Aggregator
from gateway.archiveformat import read_archive
from gateway.config.model import AggregatorConfig
from gateway.types import SpendEvent
from tests.ledger import NOW, drain, event, produce

GROUP = rediskeys.EVENTS_GROUP
LATER = time.time() + 10 * 86400  # every entry is past a 48 h retention by then


def config(tmp_path: Path, retention_s: float = 48 * 3600) -> AggregatorConfig:
    return AggregatorConfig(
        block_ms=10, archive_dir=str(tmp_path / "archive"), stream_retention_s=retention_s
    )


def archived(tmp_path: Path, team: str = "alpha") -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    for path in sorted((tmp_path / "archive" / team_dirname(team)).glob("*.jsonl.gz")):
        records.extend(read_archive(path))
    return records


async def test_archives_acked_entries_and_trims_them(redis: Redis, tmp_path: Path) -> None:
    events = [event(i, cost_nano=100 + i) for i in range(25)]
    ids = await produce(redis, events)
    await drain(redis)
    archiver = Archiver(redis, config(tmp_path), chunk=10)  # several chunks and gzip members
    assert await archiver.archive_once(LATER) == 25
    records = archived(tmp_path)
    assert [r["_stream_id"] for r in records] == ids
    assert [SpendEvent.from_fields(r) for r in records] == events
    stream = rediskeys.events_stream("alpha")
    assert await redis.xlen(stream) == 0
    assert (await redis.get(rediskeys.archive_cursor("alpha"))).decode() == ids[-1]
    # Idempotent: nothing new, nothing archived again.
    assert await archiver.archive_once(LATER) == 0
    assert len(archived(tmp_path)) == 25
    day = time.strftime("%Y-%m-%d", time.gmtime(int(ids[0].split("-")[0]) // 1000))
    assert (tmp_path / "archive" / "alpha" / f"{day}.jsonl.gz").exists()


async def test_never_archives_or_trims_unacked(redis: Redis, tmp_path: Path) -> None:
    ids = await produce(redis, [event(i) for i in range(10)])
    aggregator = Aggregator(
        redis, AggregatorConfig(batch_size=4, block_ms=10), consumer="A", clock=NOW
    )
    await aggregator.refresh_streams()
    stream = rediskeys.events_stream("alpha")
    reply = await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=4)
    assert await aggregator.apply("alpha", reply[0][1]) == 4  # ids 0..3 acked
    await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=3)  # ids 4..6 pending
    # ids 7..9 never delivered
    archiver = Archiver(redis, config(tmp_path))
    assert await archiver.archive_once(LATER) == 4
    assert [r["_stream_id"] for r in archived(tmp_path)] == ids[:4]
    remaining = [i.decode() for i, _ in await redis.xrange(stream)]
    assert remaining == ids[4:]
    pending = await redis.xpending(stream, GROUP)
    assert pending["pending"] == 3
    # Once everything is applied (A's pending entries reclaimed), the rest follows.
    await drain(redis, AggregatorConfig(block_ms=10, claim_idle_s=0))
    assert await archiver.archive_once(LATER) == 6
    assert [r["_stream_id"] for r in archived(tmp_path)] == ids
    assert await redis.xlen(stream) == 0


async def test_keeps_entries_younger_than_retention(redis: Redis, tmp_path: Path) -> None:
    await produce(redis, [event(i) for i in range(3)])
    await drain(redis)
    archiver = Archiver(redis, config(tmp_path))
    assert await archiver.archive_once(time.time()) == 0
    assert await redis.xlen(rediskeys.events_stream("alpha")) == 3
    assert await archiver.archive_once(time.time() + 48 * 3600 + 60) == 3


async def test_stream_without_group_is_left_alone(redis: Redis, tmp_path: Path) -> None:
    await produce(redis, [event(1)])  # no aggregator ever joined: nothing is known acked
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 0
    assert await redis.xlen(rediskeys.events_stream("alpha")) == 1


async def test_crash_before_cursor_update_duplicates_lines_readers_drop(
    redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await produce(redis, [event(i) for i in range(6)])
    await drain(redis)
    archiver = Archiver(redis, config(tmp_path))
    real_set = redis.set

    async def crash_on_cursor(name: str, *args: object, **kwargs: object) -> object:
        if name == rediskeys.archive_cursor("alpha"):
            raise ConnectionError("process killed after the file write")
        return await real_set(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis, "set", crash_on_cursor)
    with pytest.raises(ConnectionError):
        await archiver.archive_once(LATER)
    monkeypatch.setattr(redis, "set", real_set)
    await redis.delete(rediskeys.archive_lock("alpha"))  # the dead process's lease
    assert await redis.xlen(rediskeys.events_stream("alpha")) == 6  # nothing trimmed
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 6
    path = next((tmp_path / "archive" / "alpha").glob("*.jsonl.gz"))
    with gzip.open(path) as f:
        assert len(f.read().splitlines()) == 12  # written twice
    assert [r["_stream_id"] for r in read_archive(path)] == ids  # read once


async def test_torn_tail_is_cut_before_the_next_append(redis: Redis, tmp_path: Path) -> None:
    ids = await produce(redis, [event(i) for i in range(3)])
    await drain(redis)
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 3
    path = next((tmp_path / "archive" / "alpha").glob("*.jsonl.gz"))
    torn = gzip.compress(b'{"_stream_id": "9-9"}\n' * 50)[:40]
    with path.open("ab") as f:
        f.write(torn)  # a crash in the middle of an append
    assert [r["_stream_id"] for r in read_archive(path)] == ids  # readers skip it
    more = await produce(redis, [event(i) for i in range(3, 5)])
    await drain(redis)
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 2  # new process
    assert [r["_stream_id"] for r in archived(tmp_path)] == ids + more
    with gzip.open(path) as f:  # the torn bytes are gone: any gzip reader reads it whole
        assert len(f.read().splitlines()) == 5


async def test_one_replica_archives_a_team_at_a_time(redis: Redis, tmp_path: Path) -> None:
    await produce(redis, [event(1)])
    await drain(redis)
    await redis.set(rediskeys.archive_lock("alpha"), "someone-else", px=60_000)
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 0
    await redis.delete(rediskeys.archive_lock("alpha"))
    assert await Archiver(redis, config(tmp_path)).archive_once(LATER) == 1
    assert not await redis.exists(rediskeys.archive_lock("alpha"))


def test_team_names_stay_inside_the_archive_dir() -> None:
    assert team_dirname("alpha") == "alpha"
    assert "/" not in team_dirname("../etc/passwd")
    assert not team_dirname("..").startswith(".")
