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
