"""Structured logs: access lines from `AccessWriter` have the same JSON shape as `logging` lines
through `JsonFormatter`, one object per line."""

from __future__ import annotations

import asyncio
import logging
import os

import orjson

from gateway.logs import AccessWriter, JsonFormatter


async def test_access_lines_are_one_json_object_each_in_the_formatter_shape() -> None:
    read_fd, write_fd = os.pipe()
    try:
        writer = AccessWriter(write_fd, flush_s=0.01)
        writer({"request_id": "req_1", "status": 200, "cost_usd": "0.000001000"})
        writer({"request_id": "req_2", "status": 429, "cost_usd": "0.000000000"})
        # Buffered: one write() for both lines, when the timer fires.
        loop = asyncio.get_running_loop()
        flushed = loop.create_future()
        loop.call_later(0.05, flushed.set_result, None)
        await flushed
        os.set_blocking(read_fd, False)
        data = os.read(read_fd, 65536)
        os.close(write_fd)
        lines = data.decode().splitlines()
    finally:
        os.close(read_fd)
    first, second = (orjson.loads(line) for line in lines)
    assert first["request_id"] == "req_1" and second["status"] == 429
    record = logging.LogRecord("spendgate.access", logging.INFO, __file__, 1, "request", None, None)
    record.access = {"request_id": "req_3"}
    via_logging = orjson.loads(JsonFormatter().format(record))
    assert set(first) - {"status", "cost_usd"} == set(via_logging)
    assert first["logger"] == via_logging["logger"] == "spendgate.access"
    assert first["ts"].endswith("Z") and len(first["ts"]) == len(via_logging["ts"])


def test_a_full_buffer_and_an_explicit_flush_write_at_once() -> None:
    read_fd, write_fd = os.pipe()
    try:
        writer = AccessWriter(write_fd, max_bytes=200)
        writer({"request_id": "x" * 300})  # over max_bytes: written now, no loop needed
        os.set_blocking(read_fd, False)
        assert b"xxx" in os.read(read_fd, 65536)
        small = AccessWriter(write_fd)
        small.flush()  # nothing buffered: nothing written
        small({"request_id": "req_9"})  # no running loop here: written at once
        assert b"req_9" in os.read(read_fd, 65536)
    finally:
        os.close(write_fd)
        os.close(read_fd)


def test_an_access_lines_time_is_its_own_to_the_millisecond_across_seconds() -> None:
    # The part up to the second is formatted once per second and reused: each line must still
    # carry its own second and millisecond, including across a second's end.
    times = iter([1796351113.9994, 1796351113.9996, 1796351114.0004, 1796351175.25, 0.0])
    read_fd, write_fd = os.pipe()
    try:
        writer = AccessWriter(write_fd, max_bytes=1, clock=lambda: next(times))
        for n in range(4):
            writer({"request_id": f"req_{n}", "latency_ms": 0.125})
        writer({})  # no fields: still one object
        writer.flush()
        os.set_blocking(read_fd, False)
        lines = os.read(read_fd, 65536).decode().splitlines()
    finally:
        os.close(write_fd)
        os.close(read_fd)
    docs = [orjson.loads(line) for line in lines]
    assert [d["ts"] for d in docs[:4]] == [
        "2026-12-04T02:25:13.999Z",
        "2026-12-04T02:25:13.999Z",
        "2026-12-04T02:25:14.000Z",
        "2026-12-04T02:26:15.250Z",
    ]
    assert [list(d)[:5] for d in docs[:4]] == [["ts", "level", "logger", "msg", "request_id"]] * 4
    assert docs[3] == {
        "ts": "2026-12-04T02:26:15.250Z",
        "level": "info",
        "logger": "spendgate.access",
        "msg": "request",
        "request_id": "req_3",
        "latency_ms": 0.125,
    }
    assert docs[4] == {
        "ts": "1970-01-01T00:00:00.000Z",
        "level": "info",
        "logger": "spendgate.access",
        "msg": "request",
    }
