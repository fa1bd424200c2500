"""Anthropic Messages API (`/v1/messages`): the `message` object and its event stream.

Usage follows Anthropic, not OpenAI: `input_tokens` excludes cache reads and cache writes, so
input + cache_read + cache_creation = `prompt_tokens_for(body)`. Cache writes are set by
`metadata.mock_cache_creation_tokens` or header `x-mock-cache-creation-tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.providers.mock.errors import error_response
from gateway.providers.mock.examples import example_object
from gateway.providers.mock.gate import Call
from gateway.providers.mock.tokens import Counts, as_count, counts_for, reply_text, split_deltas
from gateway.providers.mock.wire import event_frame, json_response


async def handle_messages(call: Call) -> web.StreamResponse:
    headers = call.request.headers
    if "x-api-key" not in headers and "authorization" not in headers:
        return error_response(401, "x-api-key header is required", "anthropic")
    counts = counts_for(call.body, headers, call.options, limit_keys=("max_tokens",))
    metadata = call.body.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    written = as_count(
        meta.get("mock_cache_creation_tokens", headers.get("x-mock-cache-creation-tokens")), 0
    )
    usage = anthropic_usage(counts, written) if call.options.report_usage else None
    message = Message(call.body, counts, f"msg_mock{call.state.next_id()}", usage)
    if call.streaming:
        return await call.stream(message.events())
    return json_response(message.final())


def anthropic_usage(counts: Counts, cache_written: int) -> dict[str, Any]:
    written = min(cache_written, counts.prompt - counts.cached)
    return {
        "input_tokens": counts.prompt - counts.cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": counts.cached,
        "output_tokens": counts.completion,
    }


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    choice_type = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(tools, list) or choice_type == "none":
        return None
    named: list[dict[str, Any]] = [t for t in tools if isinstance(t, dict) and "name" in t]
    if choice_type == "tool" and isinstance(choice, dict):
        for tool in named:
            if tool["name"] == choice.get("name"):
                return tool
    return named[0] if named else None


class Message:
    """One Messages API answer: a text block, or a `tool_use` block calling the chosen tool."""

    def __init__(
        self, body: dict[str, Any], counts: Counts, ident: str, usage: dict[str, Any] | None
    ) -> None:
        self.body = body
        self.ident = ident
        self.usage = usage
        self.tool = chosen_tool(body)
        self.text = reply_text(counts.words)
        if self.tool is not None:
            self.stop_reason = "tool_use"
        else:
            self.stop_reason = "max_tokens" if counts.truncated else "end_turn"

    def block(self, final: bool) -> dict[str, Any]:
        if self.tool is None:
            return {"type": "text", "text": self.text if final else ""}
        tool_input = example_object(self.tool.get("input_schema")) if final else {}
        return {
            "type": "tool_use",
            "id": "toolu_" + self.ident.removeprefix("msg_"),
            "name": self.tool["name"],
            "input": tool_input,
        }

    def envelope(self, final: bool) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.ident,
            "type": "message",
            "role": "assistant",
            "model": self.body.get("model"),
            "content": [self.block(final=True)] if final else [],
            "stop_reason": self.stop_reason if final else None,
            "stop_sequence": None,
        }
        if self.usage is not None:
            # The opening event reports output so far (Anthropic sends a token or so there).
            message["usage"] = self.usage if final else {**self.usage, "output_tokens": 1}
        return message

    def final(self) -> dict[str, Any]:
        return self.envelope(final=True)

    def deltas(self) -> Iterator[dict[str, Any]]:
        if self.tool is None:
            for text in split_deltas(self.text):
                yield {"type": "text_delta", "text": text}
        else:
            arguments = orjson.dumps(example_object(self.tool.get("input_schema"))).decode()
            yield {"type": "input_json_delta", "partial_json": arguments}

    def events(self) -> Iterator[bytes]:
        yield event_frame(
            "message_start", {"type": "message_start", "message": self.envelope(False)}
        )
        start = {"type": "content_block_start", "index": 0, "content_block": self.block(False)}
        yield event_frame("content_block_start", start)
        yield event_frame("ping", {"type": "ping"})
        for delta in self.deltas():
            payload = {"type": "content_block_delta", "index": 0, "delta": delta}
            yield event_frame("content_block_delta", payload)
        yield event_frame("content_block_stop", {"type": "content_block_stop", "index": 0})
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
        }
        if self.usage is not None:
            message_delta["usage"] = {"output_tokens": self.usage["output_tokens"]}
        yield event_frame("message_delta", message_delta)
        yield event_frame("message_stop", {"type": "message_stop"})
