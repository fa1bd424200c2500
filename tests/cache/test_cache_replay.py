"""Cached answers replayed as SSE streams, and streamed misses assembled into answers: round
trips against the mock upstream's own stream builder, broken streams, and the OpenAI SDK
parsing a replay served over a real socket."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.cache.replay import DONE_EVENT, chunks_to_completion, completion_to_chunks
from gateway.providers.mock.chat import chat_chunks, chat_completion
from gateway.providers.mock.completions import text_chunks, text_completion
from gateway.providers.mock.tokens import Counts
from gateway.sse import StreamScanner

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
CHAT_BODIES: dict[str, dict[str, Any]] = {
    "text": {"model": "gpt-4o", "messages": []},
    "tools": {"model": "gpt-4o", "messages": [], "tools": TOOLS},
    "json": {"model": "gpt-4o", "messages": [], "response_format": {"type": "json_object"}},
    "n2": {"model": "gpt-4o", "messages": [], "n": 2},
}


def counts(choices: int = 1, words: int = 40, truncated: bool = False) -> Counts:
    return Counts(
        prompt=9, cached=0, reasoning=0, words=words, choices=choices, truncated=truncated
    )


def scanned(frames: list[bytes], hide_usage: bool) -> list[bytes]:
    """Feed a stream through the pipeline's scanner, split at awkward places, as the pipeline
    would; return the events it kept."""
    scanner = StreamScanner(hide_usage_chunk=hide_usage)
    raw = b"".join(frames)
    for at in range(0, len(raw), 37):
        scanner.feed(raw[at : at + 37])
    scanner.flush()
    return scanner.events


def without_usage(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "usage"}


@pytest.mark.parametrize("name", list(CHAT_BODIES))
@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat_assembles_to_the_completion(name: str, include_usage: bool) -> None:
    body = dict(CHAT_BODIES[name])
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    c = counts(choices=body.get("n", 1))
    expected = chat_completion(body, c, "chatcmpl-x", 1700000000, True)
    frames = list(chat_chunks(body, c, "chatcmpl-x", 1700000000, True))
    # The scanner hides the usage chunk from a client that did not ask; it is still kept.
    assembled = chunks_to_completion(scanned(frames, hide_usage=not include_usage))
    assert assembled is not None
    if include_usage:
        assert assembled == expected
    else:
        assert assembled == without_usage(expected)


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_text_completion_assembles(include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "prompt": ["a b", "c"], "n": 1}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    c = counts(choices=2, words=5, truncated=True)
    expected = text_completion(body, c, "cmpl-x", 1700000000, True)
    assembled = chunks_to_completion(list(text_chunks(body, c, "cmpl-x", 1700000000, True)))
    assert assembled == (expected if include_usage else without_usage(expected))


@pytest.mark.parametrize("name", list(CHAT_BODIES))
def test_replay_round_trips(name: str) -> None:
    completion = chat_completion(CHAT_BODIES[name], counts(choices=2), "chatcmpl-r", 1, True)
    events = completion_to_chunks(completion, include_usage=True)
    assert events[-1] == DONE_EVENT
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert chunks_to_completion(events) == completion
    plain = completion_to_chunks(completion, include_usage=False)
    assert b'"usage"' not in b"".join(plain)
    assert chunks_to_completion(plain) == without_usage(completion)


def test_replay_of_text_completion_and_refusal_and_logprobs() -> None:
    text = text_completion({"model": "m"}, counts(words=60), "cmpl-1", 1, True)
    assert chunks_to_completion(completion_to_chunks(text, True)) == text
    logprobs = {"content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105]}], "refusal": None}
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None, "refusal": "I can't do that."},
                "logprobs": None,
                "finish_reason": "stop",
            },
        ],
    }
    assert chunks_to_completion(completion_to_chunks(chat, False)) == chat


def test_long_content_arrives_in_a_few_pieces() -> None:
    completion = chat_completion({"model": "m", "messages": []}, counts(words=200), "c", 1, True)
    events = completion_to_chunks(completion, include_usage=False)
    pieces = [e for e in events if b'"content":"' in e and b'"content":""' not in e]
    assert 2 <= len(pieces) <= 4


def test_only_chat_and_text_completions_replay() -> None:
    with pytest.raises(ValueError, match="response"):
        completion_to_chunks({"object": "response", "output": []}, include_usage=False)


@pytest.mark.parametrize(
    "damage",
    ["no_done", "no_finish", "error_event", "truncated_json", "mixed_objects", "empty"],
)
def test_incomplete_streams_give_none(damage: str) -> None:
    body = {"model": "gpt-4o", "messages": [], "stream_options": {"include_usage": True}}
    frames = list(chat_chunks(body, counts(), "c", 1, True))
    if damage == "no_done":
        frames = frames[:-1]
    elif damage == "no_finish":
        frames = [f for f in frames if b'"finish_reason":"' not in f]
    elif damage == "error_event":
        frames = [*frames[:3], b'data: {"error": {"message": "upstream broke"}}\n\n']
    elif damage == "truncated_json":
        frames = [*frames[:3], frames[3][:20], DONE_EVENT]
    elif damage == "mixed_objects":
        frames = [*frames[:2], b'data: {"object": "text_completion", "choices": []}\n\n', *frames]
    else:
        frames = [DONE_EVENT]
    assert chunks_to_completion(frames) is None


# --- The OpenAI SDK reading a replay over a real socket ---------------------------------------


def chat_answer() -> dict[str, Any]:
    return chat_completion(CHAT_BODIES["text"], counts(words=50), "chatcmpl-sdk", 1700000000, True)


def tool_answer() -> dict[str, Any]:
    return chat_completion(CHAT_BODIES["tools"], counts(), "chatcmpl-tool", 1700000000, True)


@pytest.fixture
async def replay_server() -> AsyncIterator[str]:
    """Serves the replay of a fixed answer per endpoint, the way the pipeline would on a hit."""

    async def serve(request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if not body.get("stream"):
            return web.json_response(answer)
        options = body.get("stream_options") or {}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in completion_to_chunks(answer, options.get("include_usage") is True):
            await response.write(event)
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        return await serve(request, tool_answer() if body.get("tools") else chat_answer())

    async def completions(request: web.Request) -> web.StreamResponse:
        answer = text_completion({"model": "gpt-4o"}, counts(words=30), "cmpl-sdk", 1, True)
        return await serve(request, answer)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/v1"))
    await server.close()


@pytest.fixture
async def sdk(replay_server: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=replay_server, api_key="sk-x", max_retries=0) as c:
        yield c


MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


async def test_sdk_parses_a_replayed_chat_stream(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = [], None, None
    async for chunk in stream:
        assert chunk.id == "chatcmpl-sdk" and chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    expected = chat_answer()
    assert "".join(text) == expected["choices"][0]["message"]["content"]
    assert finish == "stop"
    assert usage is not None and usage.model_dump(exclude_none=True) == expected["usage"]


async def test_sdk_stream_helper_accumulates_the_cached_answer(sdk: openai.AsyncOpenAI) -> None:
    async with sdk.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    expected = chat_answer()
    assert final.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is None  # the client did not ask for usage

    async with sdk.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, tools=copy.deepcopy(TOOLS)
    ) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    wanted = tool_answer()["choices"][0]["message"]["tool_calls"][0]
    assert (call.id, call.function.name) == (wanted["id"], "get_weather")
    assert call.function.arguments == wanted["function"]["arguments"]
    assert final.choices[0].finish_reason == "tool_calls"


async def test_sdk_parses_a_replayed_completions_stream(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.completions.create(model="gpt-4o", prompt="hi", stream=True)
    text = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(text).startswith("mock reply 1 2")
    plain = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert plain.choices[0].message.content == chat_answer()["choices"][0]["message"]["content"]
