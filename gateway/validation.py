"""Request bodies: read once, parsed once (orjson), checked for the types the gateway relies on.

Only the fields spendgate reads or that an upstream would reject with a confusing message are
checked; everything else passes through untouched, so new OpenAI parameters keep working.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import ClientClosed, InvalidRequest, PayloadTooLarge

_NUMBER = (int, float)
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "stream_options": (dict,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "max_output_tokens": (int,),
    "n": (int,),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "seed": (int,),
    "tools": (list,),
    "response_format": (dict,),
    "metadata": (dict,),
    "user": (str,),
    "dimensions": (int,),
    "encoding_format": (str,),
    "instructions": (str,),
}
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "chat/completions": {"model": (str,), "messages": (list,)},
    "completions": {"model": (str,), "prompt": (str, list)},
    "embeddings": {"model": (str,), "input": (str, list)},
    "responses": {"model": (str,)},
}
_POSITIVE = frozenset(
    {"max_tokens", "max_completion_tokens", "max_output_tokens", "n", "dimensions"}
)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


async def read_body(request: web.BaseRequest) -> bytes:
    """The whole body; `ClientClosed` when the client hangs up before sending all of it."""
    try:
        return await request.read()
    except ConnectionError as exc:  # aiohttp's "Connection lost", or the socket's own reset
        raise ClientClosed(
            "the client closed the connection before sending the whole request body"
        ) from exc


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {limit} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_type_name(body)}")
    return body


def _check_type(body: dict[str, Any], field: str, types: tuple[type, ...]) -> None:
    value = body[field]
    # bool is an int in Python but not in JSON Schema: `"max_tokens": true` is a type error.
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        expected = " or ".join("number" if t is float else t.__name__ for t in types)
        raise InvalidRequest(
            f"'{field}' must be {expected}, got {_type_name(value)}",
            code="invalid_type",
            param=field,
        )


def validate_body(endpoint: str, body: dict[str, Any]) -> None:
    """Raise InvalidRequest naming the first field that is missing or of the wrong type."""
    for field, types in _REQUIRED[endpoint].items():
        if body.get(field) is None:
            raise InvalidRequest(
                f"'{field}' is required", code="missing_required_parameter", param=field
            )
        _check_type(body, field, types)
    for field, value in body.items():  # a body has a few of the optional fields: look those up
        allowed = _OPTIONAL.get(field)
        if allowed is None or value is None:
            continue
        _check_type(body, field, allowed)
        if field in _POSITIVE and value < 1:
            raise InvalidRequest(
                f"'{field}' must be at least 1, got {value}", param=field, code="invalid_value"
            )
    if endpoint == "chat/completions":
        messages = body["messages"]
        if not messages:
            raise InvalidRequest("'messages' must not be empty", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"'messages[{i}]' must be an object with a string 'role'",
                    param=f"messages[{i}]",
                    code="invalid_type",
                )
