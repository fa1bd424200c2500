"""Watching an OpenAI-shaped SSE stream on its way through: usage, generated text, hiding.

The scanner forwards complete events as soon as they are complete (a client cannot use half an
event anyway) and only parses the few that carry usage; the chat usage chunk spendgate asked for
on the client's behalf is dropped when the client did not ask for it. The events seen are kept so
that, when a stream ends without usage (a disconnect, an upstream that never reports it), the
generated text can be counted with tiktoken.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

_USAGE = b'"usage"'


def _data_of(event: bytes) -> bytes | None:
    """The data payload of one SSE event (multi-line data joined), or None for comments/etc."""
    parts = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def _has_usage_value(event: bytes) -> bool:
    at = event.find(_USAGE)
    while at != -1:
        rest = event[at + len(_USAGE) :].lstrip(b" :")
        if not rest.startswith(b"null"):
            return True
        at = event.find(_USAGE, at + 1)
    return False


class StreamScanner:
    def __init__(self, hide_usage_chunk: bool) -> None:
        self._hide = hide_usage_chunk
        self._pending = b""
        self.events: list[bytes] = []
        self.usage: Mapping[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take bytes from upstream; return the bytes to send to the client now."""
        data = self._pending + chunk if self._pending else chunk
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end == -1:
            self._pending = data
            return b""
        complete, self._pending = data[: end + 2], data[end + 2 :]
        if _USAGE not in complete:
            self.events.append(complete)
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if self._inspect(event):
                out.append(event + b"\n\n")
            self.events.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever the upstream sent after its last complete event."""
        rest, self._pending = self._pending, b""
        if rest:
            self.events.append(rest)
        return rest

    def _inspect(self, event: bytes) -> bool:
        """Record usage carried by this event; return whether the client should see it."""
        if not _has_usage_value(event):
            return True
        payload = _data_of(event)
        if payload is None or payload == b"[DONE]":
            return True
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        # Responses API: the final event (completed, incomplete or failed) holds the response.
        if isinstance(obj.get("response"), dict):
            usage = obj["response"].get("usage")
        else:
            usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            # The chat usage chunk has no choices; drop it if only we asked for it.
            if self._hide and obj.get("choices") == []:
                return False
        return True

    def generated_text(self) -> str:
        """Text the upstream generated so far, from the events seen (for token counting)."""
        pieces: list[str] = []
        for block in self.events:
            for event in block.split(b"\n\n"):
                payload = _data_of(event)
                if not payload or payload == b"[DONE]":
                    continue
                try:
                    obj = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    _collect_text(obj, pieces)
        return "".join(pieces)


def _collect_text(obj: Mapping[str, Any], pieces: list[str]) -> None:
    if obj.get("type") == "response.output_text.delta":
        delta = obj.get("delta")
        if isinstance(delta, str):
            pieces.append(delta)
        return
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")  # legacy completions
        if isinstance(text, str):
            pieces.append(text)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str):
                pieces.append(content)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    pieces.append(function["arguments"])


def message_text(body: Mapping[str, Any]) -> str:
    """Generated text of a non-streaming chat / completions / responses body."""
    pieces: list[str] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                pieces.append(message["content"])
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    pieces.append(function["arguments"])
    for item in body.get("output") or ():
        for part in (item.get("content") or ()) if isinstance(item, dict) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
    return "".join(pieces)
