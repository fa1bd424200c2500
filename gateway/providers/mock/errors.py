"""Error answers of the mock upstream, shaped like the real provider's.

OpenAI endpoints answer `{"error": {"message", "type", "param", "code"}}`; the Anthropic endpoint
answers `{"type": "error", "error": {"type", "message"}}`. Both carry `error.message` and
`error.type`, so a reader of either shape finds them in the same place.
"""

from __future__ import annotations

import math
from typing import Literal

import orjson
from aiohttp import web

Dialect = Literal["openai", "anthropic"]

# status -> (OpenAI type, OpenAI code, Anthropic type)
_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "invalid_request_error"),
    401: ("authentication_error", "invalid_api_key", "authentication_error"),
    403: ("permission_error", None, "permission_error"),
    404: ("invalid_request_error", "not_found", "not_found_error"),
    408: ("timeout_error", "timeout", "timeout_error"),
    413: ("invalid_request_error", "request_too_large", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    500: ("server_error", "internal_error", "api_error"),
    502: ("server_error", "bad_gateway", "api_error"),
    503: ("server_error", "service_unavailable", "overloaded_error"),
    504: ("server_error", "timeout", "timeout_error"),
    529: ("server_error", "overloaded", "overloaded_error"),
}


class MockBadRequest(Exception):
    """The request cannot be answered (bad JSON, bad field); rendered as a 400."""


def error_response(
    status: int,
    message: str,
    dialect: Dialect = "openai",
    *,
    retry_after_s: float | None = None,
) -> web.Response:
    openai_type, code, anthropic_type = _KINDS.get(
        status,
        ("server_error", None, "api_error")
        if status >= 500
        else ("invalid_request_error", None, "invalid_request_error"),
    )
    if dialect == "anthropic":
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    else:
        body = {"error": {"message": message, "type": openai_type, "param": None, "code": code}}
    headers: dict[str, str] = {}
    if retry_after_s is not None:
        # `retry-after` is whole seconds in HTTP; the `-ms` form (read first by the OpenAI SDK)
        # keeps sub-second values usable in fast tests.
        headers["retry-after"] = str(math.ceil(retry_after_s))
        headers["retry-after-ms"] = str(round(retry_after_s * 1000))
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )
