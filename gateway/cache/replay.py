"""Converting between a finished answer and its SSE stream, so the cache serves both shapes.

A cached answer is always the final non-streaming JSON. `completion_to_chunks` replays it as
the stream OpenAI would have sent (chat.completion.chunk or text_completion events ending with
`data: [DONE]`); `chunks_to_completion` assembles that JSON from a streamed miss's events, or
gives None when the stream did not finish cleanly (it must then not be cached). Chat
Completions and legacy Completions only: a Responses stream is a different protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

DONE_EVENT = b"data: [DONE]\n\n"
REPLAY_OBJECTS = frozenset({"chat.completion", "text_completion"})
# Replayed text arrives in at most this many pieces per choice (never smaller than the minimum):
# enough for a client's incremental rendering to work, few enough to stay cheap.
_PIECES = 4
_MIN_PIECE_CHARS = 32
_HEADER_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
_TEXT_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def completion_to_chunks(completion: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    """The SSE events of `completion` (a chat.completion or text_completion object), each
    `data: {...}\\n\\n`, ending with `data: [DONE]`. With `include_usage`, every chunk carries
    `"usage": null` and a last chunk with no choices carries the completion's usage, as OpenAI
    sends it for `stream_options.include_usage`. Raises ValueError for any other object."""
    kind = completion.get("object")
    if kind not in REPLAY_OBJECTS:
        raise ValueError(f"cannot replay a {kind!r} object as a stream")
    chat = kind == "chat.completion"
    head: dict[str, Any] = {
        name: completion[name] for name in _HEADER_FIELDS if completion.get(name) is not None
    }
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    usage = completion.get("usage")
    with_usage = include_usage and isinstance(usage, Mapping)
    if with_usage:
        head["usage"] = None
    events: list[bytes] = []
    for choice in _choices(completion):
        deltas = _chat_deltas(choice) if chat else _text_deltas(choice)
        for part in deltas:
            events.append(_event({**head, "choices": [part]}))
    if with_usage:
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return events


def chunks_to_completion(events: Iterable[bytes]) -> dict[str, Any] | None:
    """The chat.completion / text_completion a stream amounts to, from the raw SSE blocks seen
    (`StreamScanner.events`: each block one or more events). None unless the stream ended with
    `[DONE]`, carried no error event and every choice got its finish_reason."""
    head: dict[str, Any] = {}
    kind: str | None = None
    usage: Any = None
    done = False
    choices: dict[int, _Choice] = {}
    for payload in _payloads(events):
        if payload == b"[DONE]":
            done = True
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict) or chunk.get("error") is not None:
            return None
        this_kind = chunk.get("object")
        if this_kind not in ("chat.completion.chunk", "text_completion") or (
            kind is not None and this_kind != kind
        ):
            return None
        if kind is None:  # the envelope is the same on every chunk: read it once
            kind = this_kind
            head = {name: chunk[name] for name in _HEADER_FIELDS if chunk.get(name) is not None}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            if not isinstance(part, dict) or not isinstance(part.get("index"), int):
                return None
            choices.setdefault(part["index"], _Choice()).feed(part)
    if not done or kind is None or not choices:
        return None
    if any(c.finish_reason is None for c in choices.values()):
        return None
    chat = kind == "chat.completion.chunk"
    result: dict[str, Any] = {
        "id": head.get("id"),
        "object": "chat.completion" if chat else "text_completion",
        "created": head.get("created"),
        "model": head.get("model"),
    }
    for name in ("system_fingerprint", "service_tier"):
        if name in head:
            result[name] = head[name]
    result["choices"] = [
        choices[i].chat(i) if chat else choices[i].text_choice(i) for i in sorted(choices)
    ]
    if usage is not None:
        result["usage"] = usage
    return result


def _event(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _choices(completion: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [c for c in completion.get("choices") or () if isinstance(c, Mapping)]
    return sorted(found, key=_index_of)


def _index_of(choice: Mapping[str, Any]) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) else 0


def _pieces(text: str) -> list[str]:
    if not text:
        return []
    size = max(_MIN_PIECE_CHARS, -(-len(text) // _PIECES))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chat_deltas(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    logprobs = choice.get("logprobs")

    def part(delta: Mapping[str, Any], finish: Any = None, lp: Any = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}

    content = message.get("content")
    refusal = message.get("refusal")
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, Mapping)]
    first: dict[str, Any] = {"role": message.get("role") or "assistant"}
    first["content"] = "" if isinstance(content, str) else None
    if message.get("annotations"):
        first["annotations"] = message["annotations"]
    out = [part(first)]
    if isinstance(content, str) and content:
        if logprobs is not None:
            # Token logprobs cannot be cut to match arbitrary pieces: one piece carries all.
            out.append(part({"content": content}, lp=logprobs))
        else:
            out.extend(part({"content": piece}) for piece in _pieces(content))
    if isinstance(refusal, str) and refusal:
        out.extend(part({"refusal": piece}) for piece in _pieces(refusal))
    for position, call in enumerate(calls):
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        opening = {
            "index": position,
            "id": call.get("id"),
            "type": call.get("type") or "function",
            "function": {"name": function.get("name"), "arguments": ""},
        }
        out.append(part({"tool_calls": [opening]}))
        arguments = function.get("arguments")
        for piece in _pieces(arguments if isinstance(arguments, str) else ""):
            more = {"index": position, "function": {"arguments": piece}}
            out.append(part({"tool_calls": [more]}))
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        out.append(part({"function_call": dict(legacy)}))
    out.append(part({}, finish=choice.get("finish_reason") or "stop"))
    return out


def _text_deltas(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    text = choice.get("text")
    text = text if isinstance(text, str) else ""
    logprobs = choice.get("logprobs")

    def part(piece: str, finish: Any = None, lp: Any = None) -> dict[str, Any]:
        return {"text": piece, "index": index, "logprobs": lp, "finish_reason": finish}

    out = [part(text, lp=logprobs)] if logprobs is not None else [part(p) for p in _pieces(text)]
    out.append(part("", finish=choice.get("finish_reason") or "stop"))
    return out


def _payloads(blocks: Iterable[bytes]) -> Iterable[bytes]:
    for block in blocks:
        if b"\r\n" in block:
            block = block.replace(b"\r\n", b"\n")
        for event in block.split(b"\n\n"):
            if event.startswith(b"data: ") and b"\n" not in event:
                yield event[6:]  # the usual shape: one data line
                continue
            parts = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
            if parts:
                yield b"\n".join(parts)


class _Choice:
    """One choice being assembled from its deltas."""

    __slots__ = (
        "annotations",
        "content",
        "finish_reason",
        "legacy_call",
        "logprobs",
        "refusal",
        "role",
        "text",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] | None = None
        self.refusal: list[str] = []
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.legacy_call: dict[str, Any] | None = None
        self.annotations: list[Any] = []
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def feed(self, part: Mapping[str, Any]) -> None:
        if part.get("finish_reason") is not None:
            self.finish_reason = part["finish_reason"]
        if isinstance(part.get("logprobs"), dict):
            self._merge_logprobs(part["logprobs"])
        if isinstance(part.get("text"), str):
            self.text.append(part["text"])
        delta = part.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        content = delta.get("content")
        if isinstance(content, str):
            if self.content is None:
                self.content = []
            self.content.append(content)
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        if isinstance(delta.get("annotations"), list):
            self.annotations.extend(delta["annotations"])
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._feed_call(call)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            if self.legacy_call is None:
                self.legacy_call = {"name": None, "arguments": ""}
            if legacy.get("name"):
                self.legacy_call["name"] = legacy["name"]
            if isinstance(legacy.get("arguments"), str):
                self.legacy_call["arguments"] += legacy["arguments"]

    def _feed_call(self, call: Mapping[str, Any]) -> None:
        position = call.get("index", len(self.tool_calls))
        slot = self.tool_calls.setdefault(
            position, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function")
        if isinstance(function, Mapping):
            if function.get("name"):
                slot["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                slot["function"]["arguments"] += function["arguments"]

    def _merge_logprobs(self, logprobs: Mapping[str, Any]) -> None:
        merged = self.logprobs if self.logprobs is not None else {}
        for name, value in logprobs.items():
            if isinstance(value, list):
                merged[name] = (merged.get(name) or []) + value
            elif name not in merged:
                merged[name] = value
        self.logprobs = merged

    def chat(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.content) if self.content is not None else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if self.annotations:
            message["annotations"] = self.annotations
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.legacy_call is not None:
            message["function_call"] = self.legacy_call
        return {
            "index": index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }

    def text_choice(self, index: int) -> dict[str, Any]:
        return {
            "text": "".join(self.text),
            "index": index,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }
