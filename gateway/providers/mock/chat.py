"""OpenAI chat completions: `chat.completion` objects and `chat.completion.chunk` streams.

Text replies, tool calls (first tool, or the one `tool_choice` names, with schema-shaped
arguments) and JSON-mode replies; `n` choices. Building the answer is pure; `handle_chat` wires it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from gateway.providers.mock.examples import example_object
from gateway.providers.mock.gate import Call
from gateway.providers.mock.tokens import (
    Counts,
    counts_for,
    openai_usage,
    reply_text,
    split_deltas,
)
from gateway.providers.mock.wire import DONE_FRAME, data_frame, json_response

FINGERPRINT = "fp_mock"


async def handle_chat(call: Call) -> web.StreamResponse:
    body = call.body
    counts = counts_for(
        body,
        call.request.headers,
        call.options,
        limit_keys=("max_completion_tokens", "max_tokens"),
        choices=choice_count(body),
    )
    ident = f"chatcmpl-mock{call.state.next_id()}"
    created = int(time.time())
    usage = call.options.report_usage
    if call.streaming:
        return await call.stream(chat_chunks(body, counts, ident, created, usage))
    return json_response(chat_completion(body, counts, ident, created, usage))


def choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function definition the reply calls, or None for a text reply."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    functions: list[dict[str, Any]] = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function
    return functions[0] if functions else None


def reply_content(body: dict[str, Any], words: int) -> str:
    """The assistant text: the plain reply, or a JSON object when `response_format` asks."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    text = reply_text(words)
    if kind == "json_schema" and isinstance(fmt, dict):
        spec = fmt.get("json_schema")
        value = example_object(spec.get("schema") if isinstance(spec, dict) else None)
        return orjson.dumps(value or {"reply": text}).decode()
    if kind == "json_object":
        return orjson.dumps({"reply": text}).decode()
    return text


def tool_call(function: dict[str, Any], ident: str, index: int) -> dict[str, Any]:
    arguments = orjson.dumps(example_object(function.get("parameters"))).decode()
    return {
        "id": f"call_{ident.removeprefix('chatcmpl-')}_{index}",
        "type": "function",
        "function": {"name": function.get("name"), "arguments": arguments},
    }


def finish_reason(counts: Counts, tool: dict[str, Any] | None) -> str:
    if tool is not None:
        return "tool_calls"
    return "length" if counts.truncated else "stop"


def chat_completion(
    body: dict[str, Any], counts: Counts, ident: str, created: int, report_usage: bool
) -> dict[str, Any]:
    tool = chosen_tool(body)
    content = None if tool is not None else reply_content(body, counts.words)
    choices = []
    for index in range(counts.choices):
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if tool is not None:
            message["tool_calls"] = [tool_call(tool, ident, index)]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(counts, tool),
            }
        )
    completion: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": body.get("model"),
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    if report_usage:
        completion["usage"] = openai_usage(counts)
    return completion


def chat_chunks(
    body: dict[str, Any], counts: Counts, ident: str, created: int, report_usage: bool
) -> Iterator[bytes]:
    """The SSE frames of a streamed chat completion, ending with `data: [DONE]`.

    With `stream_options.include_usage` every chunk carries `"usage": null` and one last chunk
    with no choices carries the usage, as OpenAI does; without it no chunk has a usage key.
    """
    options = body.get("stream_options")
    include_usage = (
        report_usage and isinstance(options, dict) and options.get("include_usage") is True
    )
    head: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": body.get("model"),
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        head["usage"] = None
    # Every chunk shares the same envelope: serialize it once and splice each choice in.
    prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":['
    suffix = b"]}\n\n"

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return prefix + orjson.dumps(choice) + suffix

    tool = chosen_tool(body)
    choices = range(counts.choices)
    if tool is not None:
        for index in choices:
            call = tool_call(tool, ident, index)
            arguments = call["function"]["arguments"]
            call["function"]["arguments"] = ""
            start = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
            yield chunk(index, start)
            yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
    else:
        for index in choices:
            yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
        for delta in split_deltas(reply_content(body, counts.words)):
            for index in choices:
                yield chunk(index, {"content": delta})
    for index in choices:
        yield chunk(index, {}, finish_reason(counts, tool))
    if include_usage:
        yield data_frame({**head, "choices": [], "usage": openai_usage(counts)})
    yield DONE_FRAME
