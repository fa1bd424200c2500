"""OpenAI Responses API (`/v1/responses`): the `response` object and its named-event stream.

A reply cut short by `max_output_tokens` is `status: "incomplete"` (stream ends with
`response.incomplete`), as OpenAI does; otherwise `completed`. `text.format` json modes give
a JSON object as the text.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.providers.mock.examples import example_object
from gateway.providers.mock.gate import Call
from gateway.providers.mock.tokens import Counts, counts_for, reply_text, split_deltas
from gateway.providers.mock.wire import event_frame, json_response

_Step = tuple[str, dict[str, Any]]  # (event name, payload) of one stream event


async def handle_responses(call: Call) -> web.StreamResponse:
    body = call.body
    counts = counts_for(body, call.request.headers, call.options, limit_keys=("max_output_tokens",))
    number = call.state.next_id()
    reply = Reply(body, counts, number, int(time.time()), call.options.report_usage)
    if call.streaming:
        return await call.stream(reply.events())
    return json_response(reply.response(final=True))


def output_text(body: dict[str, Any], words: int) -> str:
    text_config = body.get("text")
    fmt = text_config.get("format") if isinstance(text_config, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    text = reply_text(words)
    if kind == "json_schema" and isinstance(fmt, dict):
        return orjson.dumps(example_object(fmt.get("schema")) or {"reply": text}).decode()
    if kind == "json_object":
        return orjson.dumps({"reply": text}).decode()
    return text


def responses_usage(counts: Counts) -> dict[str, Any]:
    return {
        "input_tokens": counts.prompt,
        "input_tokens_details": {"cached_tokens": counts.cached, "cache_write_tokens": 0},
        "output_tokens": counts.completion,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning},
        "total_tokens": counts.total,
    }


class Reply:
    """One Responses API answer, as a final object or as the event sequence leading to it."""

    def __init__(
        self, body: dict[str, Any], counts: Counts, number: int, created: int, report_usage: bool
    ) -> None:
        self.body = body
        self.counts = counts
        self.response_id = f"resp_mock{number}"
        self.item_id = f"msg_mock{number}"
        self.created = created
        self.report_usage = report_usage
        self.text = output_text(body, counts.words)
        self.status = "incomplete" if counts.truncated else "completed"

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, final: bool) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "type": "message",
            "status": self.status if final else "in_progress",
            "role": "assistant",
            "content": [self.part(self.text)] if final else [],
        }

    def response(self, final: bool) -> dict[str, Any]:
        body = self.body
        response: dict[str, Any] = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": self.status if final else "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if final and self.counts.truncated else None
            ),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": body.get("model"),
            "output": [self.item(final=True)] if final else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "user": body.get("user"),
        }
        if self.report_usage:
            response["usage"] = responses_usage(self.counts) if final else None
        return response

    def events(self) -> Iterator[bytes]:
        """The stream, each event named and numbered as OpenAI sends them."""
        at = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        opening: list[_Step] = [
            ("response.created", {"response": self.response(final=False)}),
            ("response.in_progress", {"response": self.response(final=False)}),
            ("response.output_item.added", {"output_index": 0, "item": self.item(False)}),
            ("response.content_part.added", {**at, "part": self.part("")}),
        ]
        deltas: Iterator[_Step] = (
            ("response.output_text.delta", {**at, "delta": delta, "logprobs": []})
            for delta in split_deltas(self.text)
        )
        ending: list[_Step] = [
            ("response.output_text.done", {**at, "text": self.text, "logprobs": []}),
            ("response.content_part.done", {**at, "part": self.part(self.text)}),
            ("response.output_item.done", {"output_index": 0, "item": self.item(True)}),
            (f"response.{self.status}", {"response": self.response(final=True)}),
        ]
        for sequence, (name, payload) in enumerate(itertools.chain(opening, deltas, ending)):
            yield event_frame(name, {"type": name, "sequence_number": sequence, **payload})
