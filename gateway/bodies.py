"""What an OpenAI-shaped request body asks for, read one way by every part of the request path
that looks (tier rules, cascade checks, the recommendations' signals). Bodies are parsed JSON:
objects are dicts (a `dict` check costs a fraction of an ABC `Mapping` check)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def response_format(body: Mapping[str, Any]) -> str | None:
    """The structured output the request asks for: the `type` of Chat Completions'
    `response_format` or of the Responses API's `text.format` ("json_object", "json_schema",
    ...); None when it asks for plain text or says nothing."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if isinstance(kind, str) and kind != "text" else None
