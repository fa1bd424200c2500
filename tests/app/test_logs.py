"""Structured logs: access lines from `AccessWriter` have the same JSON shape as `logging` lines
through `JsonFormatter`, one object per line."""

from __future__ import annotations

import logging
import os

import orjson

from gateway.app.logs import AccessWriter, JsonFormatter


def test_access_lines_are_one_json_object_each_in_the_formatter_shape() -> None:
    read_fd, write_fd = os.pipe()
    try:
        writer = AccessWriter(write_fd)
        writer({"request_id": "req_1", "status": 200, "cost_usd": "0.000001000"})
        writer({"request_id": "req_2", "status": 429, "cost_usd": "0.000000000"})
        os.close(write_fd)
        lines = os.read(read_fd, 65536).decode().splitlines()
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
