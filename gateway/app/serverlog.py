"""What aiohttp's HTTP server logs, made fit for a port anyone can reach.

aiohttp logs every request its parser refuses (a control character in a header, a bare CR, a
line too long, TLS sent to a plain-HTTP port) at error level with a full traceback, so any
client could fill the error log. Those become one line without a traceback (aiohttp answers 400
and closes the connection, so there is one per connection), counted in
`sg_http_bad_requests_total{reason}`. Everything else aiohttp logs passes through unchanged.
It is the `logger` of aiohttp's request handler: nothing here runs for a well-formed request.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)

from gateway.errors import redact

log = logging.getLogger("spendgate.http")

# aiohttp's parser errors by label, subclasses first; anything else it refuses is "malformed".
_REASONS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "bad_method"),
    (BadStatusLine, "bad_request_line"),
    (LineTooLong, "line_too_long"),
    (InvalidHeader, "bad_header"),
    (InvalidURLError, "bad_url"),
    (PayloadEncodingError, "bad_body"),
)
REASONS = (*(reason for _, reason in _REASONS), "malformed")
_DETAIL_CHARS = 200


# llhttp (aiohttp's C parser) raises the generic BadHttpMessage for most problems; its message
# says where the problem is.
_WHERE = (("header", "bad_header"), ("chunk", "bad_body"), ("content-length", "bad_header"))


def reason_of(exc: HttpProcessingError) -> str:
    """A bounded label for what was wrong (a value of REASONS)."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    text = (exc.message or "").lower()
    return next((reason for word, reason in _WHERE if word in text), "malformed")


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's `aiohttp.server` logger, except for the requests its parser refuses."""

    def __init__(self, counter: Any) -> None:
        """`counter`: sg_http_bad_requests_total (labelled by reason)."""
        super().__init__(logging.getLogger("aiohttp.server"))
        self._counter = counter

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self._refused(level, exc, args[0] if args else None)
        else:
            super().log(level, msg, *args, **kwargs)

    def _refused(self, level: int, exc: HttpProcessingError, remote: object) -> None:
        reason = reason_of(exc)
        self._counter.labels(reason).inc()
        # The parser's first line says what was wrong; the bytes it quotes after it could be a
        # header's value (a cookie, a key), so only that line goes out, secrets cut.
        detail = exc.message.strip().splitlines()[0].rstrip(":") if exc.message else ""
        detail = redact(detail[:_DETAIL_CHARS]) or type(exc).__name__
        # aiohttp logs a bad method on a connection's first request at debug: it is what TLS or
        # a port scanner sent to a plain-HTTP port, routine on a public address.
        log.log(
            logging.INFO if level <= logging.DEBUG else logging.WARNING,
            "refused a malformed HTTP request from %s (%s: %s); answered 400 and closed the "
            "connection",
            remote or "unknown",
            reason,
            detail,
        )
