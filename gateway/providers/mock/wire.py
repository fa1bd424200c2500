"""Bytes on the wire: JSON bodies, SSE frames, and writing a stream of frames.

Endpoint modules build frames as pure generators; `send_stream` owns pacing (`chunk_delay_s`)
and the "disconnect after N events" injection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

DONE_FRAME = b"data: [DONE]\n\n"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def json_response(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def data_frame(obj: Any) -> bytes:
    """An unnamed SSE event, as OpenAI's chat and text completion streams use."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def event_frame(name: str, obj: Any) -> bytes:
    """A named SSE event, as the Responses and Anthropic streams use."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


async def send_stream(
    request: web.Request, frames: Iterable[bytes], *, delay_s: float, cut_after: int | None
) -> web.StreamResponse:
    """Write each frame as its own chunk, `delay_s` apart; abort the connection after
    `cut_after` frames when set (the stream then never finishes, as with a dropped upstream)."""
    response = web.StreamResponse(headers=_SSE_HEADERS)
    await response.prepare(request)
    try:
        for sent, frame in enumerate(frames):
            if sent == cut_after:
                _abort(request)
                return response
            if sent and delay_s > 0:
                await asyncio.sleep(delay_s)
            await response.write(frame)
        if cut_after is not None:
            _abort(request)
            return response
        await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-stream (a cancelled request or a load-test timeout): normal.
        pass
    return response


def abort_connection(request: web.Request) -> web.Response:
    """Drop the connection without an answer; the returned response is never sent."""
    _abort(request)
    return web.Response(status=499)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
