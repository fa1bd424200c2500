"""The one place errors become responses: OpenAI-shaped JSON with the right status.

Handlers raise `GatewayError`s; aiohttp's own HTTP errors (unknown route, wrong method, body over
the server's hard limit) are rendered in the same shape so every client sees one error format.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from gateway.errors import GatewayError, redact

log = logging.getLogger("spendgate.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_ERROR_CODES = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        # `to_dict`: the error's own fields (an approval's id) ride along with OpenAI's.
        return web.Response(
            status=exc.status,
            body=orjson.dumps(exc.to_dict()),
            content_type="application/json",
            headers=dict(exc.headers),
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_, code = _HTTP_ERROR_CODES.get(exc.status, ("invalid_request_error", None))
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        return error_response(exc.status, message, type_, code)
    except Exception:
        # The last line of defence: log it (secrets redacted) and answer in OpenAI's shape.
        log.exception("unhandled error serving %s %s", request.method, redact(request.path))
        return error_response(500, "internal error in spendgate", "server_error", "internal_error")
