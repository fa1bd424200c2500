"""OpenAI embeddings: deterministic unit vectors derived from a hash of each input.

The same input always gives the same vector and different inputs different ones. Values are
rounded to float32, so the JSON floats and the `encoding_format: "base64"` bytes (which the
OpenAI SDK asks for by default) decode to identical numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from aiohttp import web

from gateway.providers.mock.errors import MockBadRequest
from gateway.providers.mock.gate import Call
from gateway.providers.mock.tokens import prompt_tokens_for
from gateway.providers.mock.wire import json_response

DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 4096


def embedding_for(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The vector the mock returns for one input (a string or a list of token ids)."""
    return list(struct.unpack(f"<{dimensions}f", _packed(item, dimensions)))


def _packed(item: str | list[int], dimensions: int) -> bytes:
    """Little-endian float32 bytes of the unit vector for `item`."""
    text = item if isinstance(item, str) else "tokens:" + ",".join(map(str, item))
    digest = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    raw = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", digest)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in raw))


def embedding_inputs(value: object) -> list[str | list[int]]:
    """Split `input` into items: a string, a list of strings, a token list, or token lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]
        if all(isinstance(v, str) or _is_token_list(v) for v in value):
            return list(value)
    raise MockBadRequest("input must be a string, a list of strings, or token lists")


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def create_embedding(body: dict[str, Any], report_usage: bool) -> dict[str, Any]:
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise MockBadRequest(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(embedding_inputs(body.get("input"))):
        packed = _packed(item, dimensions)
        vector: str | list[float] = (
            base64.b64encode(packed).decode()
            if as_base64
            else list(struct.unpack(f"<{dimensions}f", packed))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    result: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
    if report_usage:
        tokens = prompt_tokens_for(body)
        result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return result


async def handle_embeddings(call: Call) -> web.StreamResponse:
    return json_response(create_embedding(call.body, call.options.report_usage))
