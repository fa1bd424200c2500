"""OpenAI legacy text completions (`/v1/completions`): `text_completion` objects and streams.

As with OpenAI, a list of prompts gets `n` choices per prompt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.providers.mock.chat import FINGERPRINT, choice_count
from gateway.providers.mock.gate import Call
from gateway.providers.mock.tokens import (
    Counts,
    counts_for,
    openai_usage,
    reply_text,
    split_deltas,
)
from gateway.providers.mock.wire import DONE_FRAME, data_frame, json_response


async def handle_completions(call: Call) -> web.StreamResponse:
    body = call.body
    counts = counts_for(
        body,
        call.request.headers,
        call.options,
        limit_keys=("max_tokens",),
        choices=choice_count(body) * prompt_count(body.get("prompt")),
    )
    ident = f"cmpl-mock{call.state.next_id()}"
    created = int(time.time())
    usage = call.options.report_usage
    if call.streaming:
        return await call.stream(text_chunks(body, counts, ident, created, usage))
    return json_response(text_completion(body, counts, ident, created, usage))


def prompt_count(prompt: object) -> int:
    """A string or a token list is one prompt; a list of them is several."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


def _finish(counts: Counts) -> str:
    return "length" if counts.truncated else "stop"


def text_completion(
    body: dict[str, Any], counts: Counts, ident: str, created: int, report_usage: bool
) -> dict[str, Any]:
    text = reply_text(counts.words)
    completion: dict[str, Any] = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": body.get("model"),
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": _finish(counts)}
            for i in range(counts.choices)
        ],
    }
    if report_usage:
        completion["usage"] = openai_usage(counts)
    return completion


def text_chunks(
    body: dict[str, Any], counts: Counts, ident: str, created: int, report_usage: bool
) -> Iterator[bytes]:
    """Streamed text completion frames; usage as in chat (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    include_usage = (
        report_usage and isinstance(options, dict) and options.get("include_usage") is True
    )
    head: dict[str, Any] = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": body.get("model"),
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        head["usage"] = None
    prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":['
    suffix = b"]}\n\n"

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return prefix + orjson.dumps(choice) + suffix

    choices = range(counts.choices)
    for delta in split_deltas(reply_text(counts.words)):
        for index in choices:
            yield chunk(index, delta)
    for index in choices:
        yield chunk(index, "", _finish(counts))
    if include_usage:
        yield data_frame({**head, "choices": [], "usage": openai_usage(counts)})
    yield DONE_FRAME
