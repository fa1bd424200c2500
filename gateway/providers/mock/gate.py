"""The path every mock API request takes before its endpoint: parse, record, inject, wait.

`endpoint(handler)` wraps an endpoint function taking a `Call`; injections are played here, so
endpoints only ever build the happy answer (streams get `cut_after` for mid-stream drops).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.providers.mock.errors import Dialect, MockBadRequest, error_response
from gateway.providers.mock.options import Injection, MockOptions
from gateway.providers.mock.state import MOCK_STATE, MockState
from gateway.providers.mock.wire import abort_connection, send_stream


@dataclass(slots=True)
class Call:
    """One API request as an endpoint sees it."""

    request: web.Request
    body: dict[str, Any]
    state: MockState
    cut_after: int | None = None

    @property
    def options(self) -> MockOptions:
        return self.state.options

    @property
    def streaming(self) -> bool:
        return self.body.get("stream") is True

    async def stream(self, frames: Iterable[bytes]) -> web.StreamResponse:
        return await send_stream(
            self.request, frames, delay_s=self.options.chunk_delay_s, cut_after=self.cut_after
        )


Endpoint = Callable[[Call], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint(func: Endpoint, dialect: Dialect = "openai") -> Handler:
    """An aiohttp handler that runs `func` behind recording, injections and latency."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await _serve(request, func, dialect)
        except MockBadRequest as exc:
            return error_response(400, str(exc), dialect)

    return handle


async def _serve(request: web.Request, func: Endpoint, dialect: Dialect) -> web.StreamResponse:
    state = request.app[MOCK_STATE]
    body = await _read_body(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    state.record(request.method, request.path, headers, body)
    call = Call(request, body or {}, state)
    injection = _injection_for(request, body, state)
    if injection is not None:
        early = await _play(injection, call, dialect)
        if early is not None:
            return early
    if state.options.latency_s > 0:
        await asyncio.sleep(state.options.latency_s)
    return await func(call)


async def _read_body(request: web.Request) -> dict[str, Any] | None:
    if request.method != "POST":
        return None
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MockBadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MockBadRequest("the request body must be a JSON object")
    return body


def _injection_for(
    request: web.Request, body: dict[str, Any] | None, state: MockState
) -> Injection | None:
    header = request.headers.get("x-mock-status")
    if header is not None:
        try:
            return Injection(status=int(header))
        except ValueError as exc:
            raise MockBadRequest(f"bad x-mock-status header: {exc}") from None
    if not state.injections:
        return None
    return state.take_injection(request.path, body.get("model") if body else None)


async def _play(injection: Injection, call: Call, dialect: Dialect) -> web.StreamResponse | None:
    """Act out an injection; a response ends the request, None lets the endpoint answer."""
    if injection.mode == "timeout":
        # Wait on the shutdown event rather than a bare sleep, so stopping the mock does not
        # hang for the whole delay on requests nobody is waiting for.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.state.stopping.wait(), injection.delay_s)
    if injection.status is not None:
        message = injection.message or f"mock upstream: injected HTTP {injection.status}"
        retry_after = injection.retry_after_s if injection.status == 429 else None
        return error_response(injection.status, message, dialect, retry_after_s=retry_after)
    if injection.mode == "disconnect":
        if not call.streaming:
            return abort_connection(call.request)
        call.cut_after = injection.after_chunks
    return None
