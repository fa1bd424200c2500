"""Structured logging: one JSON object per line on stderr, secrets redacted.

Access lines carry their fields under the record attribute `access` (see accounting.Record); other
lines are plain messages. Configured by each command that runs a process (`serve`, `aggregate`,
`demo`), never at import; below `app` so that every command can use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import redact


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            doc["msg"] = record.msg
            doc.update(access)
        else:
            doc["msg"] = redact(record.getMessage())
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO", access_log: bool = True, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("spendgate.access").setLevel(logging.INFO if access_log else logging.WARNING)
    # aiohttp's own access log would duplicate ours (and print raw request lines).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# What follows an access line's time, up to its fields.
_ACCESS_HEAD = b'"level":"info","logger":"spendgate.access","msg":"request"'


class AccessWriter:
    """Access lines written straight to a file descriptor, in the same JSON shape as
    `JsonFormatter`, without building a `LogRecord` per request (that and the handler chain
    were ~8 % of the request path under load). Lines are buffered and written at most every
    `flush_s` (or at 64 KiB), one write() for many lines; `flush` empties the buffer (the app
    calls it on shutdown; a crash loses at most `flush_s` of access lines, never spend: spend
    is in the ledger). `serve` uses it; elsewhere (tests, the demo) access lines go through
    `logging` like every other line."""

    def __init__(
        self,
        fd: int = 2,
        flush_s: float = 0.1,
        max_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fd = fd
        self._clock = clock
        self._flush_s = flush_s
        self._max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1  # the second `_stamp` was formatted for
        self._stamp = b""

    def __call__(self, fields: dict[str, Any]) -> None:
        # The fixed head (its time formatted once per second), then the fields' object without
        # its "{": no merged dict per line, and JsonFormatter's shape.
        ms = int(self._clock() * 1000)
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime('{"ts":"%Y-%m-%dT%H:%M:%S', time.gmtime(second)).encode()
        if fields:
            body = orjson.dumps(fields, default=str)[1:]
            line = b'%s.%03dZ",%s,%s\n' % (self._stamp, milli, _ACCESS_HEAD, body)
        else:
            line = b'%s.%03dZ",%s}\n' % (self._stamp, milli, _ACCESS_HEAD)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._max_bytes:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: nothing would flush later
                self.flush()
                return
            self._timer = loop.call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data, self._lines, self._size = b"".join(self._lines), [], 0
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
