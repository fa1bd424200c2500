"""The mock upstream, checked over real sockets with the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from gateway.providers.mock import (
    MockOptions,
    MockUpstream,
    embedding_for,
    prompt_tokens_for,
    reply_text,
)

ROOT = Path(__file__).resolve().parents[2]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
async def oai(mock: MockUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=mock.base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(mock: MockUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=mock.url, api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there world"},
        ],
        **extra,
    }


async def sse_data(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    """The `data:` payloads of a raw SSE answer, parsed, with `[DONE]` kept as a string."""
    async with session.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = await resp.text()
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


# --- prompt token formula and embeddings (pure) ---------------------------------------------


def test_prompt_tokens_formula() -> None:
    assert prompt_tokens_for(chat_body()) == (3 + 3) + (3 + 3)
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a b"}, "c"]}]}
    assert prompt_tokens_for(parts) == 3 + 3
    assert prompt_tokens_for({"system": "be nice", "messages": [{"content": "x"}]}) == 5 + 4
    assert prompt_tokens_for({"prompt": ["one two", "three"]}) == 3
    assert prompt_tokens_for({"input": [1, 2, 3]}) == 3
    assert prompt_tokens_for({"input": [[1, 2], [3]]}) == 3
    responses = {"instructions": "be brief", "input": [{"role": "user", "content": "hi you"}]}
    assert prompt_tokens_for(responses) == 5 + 5
    assert reply_text(4) == "mock reply 1 2"
    assert reply_text(1) == "mock"


def test_embedding_vectors_are_deterministic_unit_vectors() -> None:
    a, b = embedding_for("hello"), embedding_for("hello")
    assert a == b
    assert a != embedding_for("hello!")
    assert len(a) == 8 and len(embedding_for("x", 64)) == 64
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0, rel_tol=1e-5)
    assert embedding_for([1, 2, 3]) != embedding_for("1 2 3")


# --- OpenAI chat --------------------------------------------------------------------------


async def test_chat_completion_text_and_usage(mock: MockUpstream, oai: openai.AsyncOpenAI) -> None:
    body = chat_body()
    completion = await oai.chat.completions.create(**body)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == reply_text(16)
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == prompt_tokens_for(body) == 12
    assert usage.completion_tokens == 16
    assert usage.total_tokens == 28
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_limits_choices_and_overrides(oai: openai.AsyncOpenAI) -> None:
    short = await oai.chat.completions.create(**chat_body(max_tokens=5))
    assert short.choices[0].message.content == reply_text(5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 5

    exact = await oai.chat.completions.create(**chat_body(max_completion_tokens=16))
    assert exact.choices[0].finish_reason == "stop"

    two = await oai.chat.completions.create(**chat_body(n=2, max_completion_tokens=4))
    assert [c.index for c in two.choices] == [0, 1]
    assert all(c.message.content == reply_text(4) for c in two.choices)
    assert two.usage is not None and two.usage.completion_tokens == 8

    headers = {"x-mock-completion-tokens": "3", "x-mock-reasoning-tokens": "2"}
    header = await oai.chat.completions.create(**chat_body(), extra_headers=headers)
    assert header.choices[0].message.content == "mock reply 1"
    assert header.usage is not None and header.usage.completion_tokens == 3 + 2


async def test_chat_cached_and_reasoning_tokens_from_metadata(oai: openai.AsyncOpenAI) -> None:
    body = chat_body(metadata={"mock_cached_tokens": "4", "mock_reasoning_tokens": 7})
    completion = await oai.chat.completions.create(**body)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == prompt_tokens_for(body)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens == 16 + 7
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 7


async def test_chat_tool_calls(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(**chat_body(tools=[WEATHER_TOOL]))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "mock", "days": 1}

    plain = await oai.chat.completions.create(**chat_body(tools=[WEATHER_TOOL], tool_choice="none"))
    assert plain.choices[0].message.tool_calls is None
    assert plain.choices[0].message.content == reply_text(16)


async def test_chat_streamed_tool_call_accumulates(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(**chat_body(tools=[WEATHER_TOOL]), stream=True)
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.function is not None
                name += call.function.name or ""
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "mock", "days": 1}
    assert finish == "tool_calls"


async def test_chat_json_modes(oai: openai.AsyncOpenAI) -> None:
    plain = await oai.chat.completions.create(**chat_body(response_format={"type": "json_object"}))
    assert isinstance(json.loads(plain.choices[0].message.content or ""), dict)
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
        "required": ["answer", "score"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    structured = await oai.chat.completions.create(**chat_body(response_format=fmt))
    assert json.loads(structured.choices[0].message.content or "") == {
        "answer": "mock",
        "score": 1.5,
    }


async def test_chat_stream_with_usage(mock: MockUpstream, oai: openai.AsyncOpenAI) -> None:
    body = chat_body(stream_options={"include_usage": True})
    stream = await oai.chat.completions.create(**body, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(16)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 16
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt_tokens_for(body)
    assert chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)


async def test_chat_stream_raw_frames(mock: MockUpstream, http: aiohttp.ClientSession) -> None:
    url = mock.base_url + "/chat/completions"
    with_usage = await sse_data(
        http, url, chat_body(stream=True, stream_options={"include_usage": True}, n=2)
    )
    assert with_usage[-1] == "[DONE]"
    chunks = with_usage[:-1]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 32
    finishes = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finishes) == [0, 1]

    without = await sse_data(http, url, chat_body(stream=True))
    assert without[-1] == "[DONE]"
    assert all("usage" not in c for c in without[:-1])


async def test_chat_stream_paced_by_chunk_delay(oai: openai.AsyncOpenAI) -> None:
    async with MockUpstream(MockOptions(chunk_delay_s=0.01, completion_tokens=5)) as slow:
        client = openai.AsyncOpenAI(base_url=slow.base_url, api_key="x", max_retries=0)
        try:
            started = time.monotonic()
            stream = await client.chat.completions.create(**chat_body(), stream=True)
            arrivals = [time.monotonic() async for _ in stream]
        finally:
            await client.close()
    # role + 5 words + finish = 7 chunks, 6 gaps of 10 ms between them.
    assert len(arrivals) == 7
    assert arrivals[-1] - started >= 0.05


async def test_no_usage_option_removes_usage_everywhere(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockOptions(report_usage=False)) as quiet:
        async with http.post(quiet.base_url + "/chat/completions", json=chat_body()) as resp:
            assert "usage" not in await resp.json()
        frames = await sse_data(
            http,
            quiet.base_url + "/chat/completions",
            chat_body(stream=True, stream_options={"include_usage": True}),
        )
        assert all("usage" not in f for f in frames[:-1])
        assert all(f["choices"] for f in frames[:-1])
        body = {"model": "gpt-4o", "input": "hi"}
        async with http.post(quiet.base_url + "/responses", json=body) as resp:
            assert "usage" not in await resp.json()
        body = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [], "stream": True}
        async with http.post(
            quiet.url + "/v1/messages", json=body, headers={"x-api-key": "k"}
        ) as r:
            assert b"usage" not in await r.read()


# --- OpenAI completions, embeddings, models ---------------------------------------------------


async def test_text_completions(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi now")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == reply_text(16)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 16

    many = await oai.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["a b", "c"], max_tokens=2
    )
    assert [c.text for c in many.choices] == ["mock reply", "mock reply"]
    assert many.choices[0].finish_reason == "length"
    assert many.usage is not None and many.usage.completion_tokens == 4

    stream = await oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="x",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply_text(16)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17


async def test_embeddings_default_base64_matches_vectors(
    mock: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    result = await oai.embeddings.create(model="text-embedding-3-small", input="hello world")
    # The SDK asks for base64 unless told otherwise, and decodes it back to floats.
    assert mock.requests[-1].body is not None
    assert mock.requests[-1].body["encoding_format"] == "base64"
    assert result.data[0].embedding == embedding_for("hello world")
    assert result.usage.prompt_tokens == 2 and result.usage.total_tokens == 2

    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float", dimensions=16
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == embedding_for("a", 16)
    assert floats.data[1].embedding == embedding_for("b", 16)
    assert floats.data[0].embedding != floats.data[1].embedding

    tokens = await oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]])
    assert tokens.data[0].embedding == embedding_for([1, 2])
    assert tokens.usage.prompt_tokens == 3


async def test_models_list(oai: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in oai.models.list()]
    assert "gpt-4o-mini" in ids and "claude-haiku-4-5" in ids


# --- OpenAI Responses ---------------------------------------------------------------------


async def test_responses_non_streaming(oai: openai.AsyncOpenAI) -> None:
    response = await oai.responses.create(model="gpt-4o", input="tell me a joke")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "gpt-4o"
    assert response.output_text == reply_text(16)
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert response.usage is not None
    assert response.usage.input_tokens == 4
    assert response.usage.output_tokens == 16
    assert response.usage.total_tokens == 20
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0

    body: dict[str, Any] = {
        "model": "gpt-4o",
        "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}],
        "max_output_tokens": 3,
    }
    short = await oai.responses.create(**body)
    assert short.status == "incomplete"
    assert short.incomplete_details is not None
    assert short.incomplete_details.reason == "max_output_tokens"
    assert short.output_text == "mock reply 1"
    assert short.usage is not None and short.usage.input_tokens == prompt_tokens_for(body) == 10


async def test_responses_streaming(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.responses.create(model="gpt-4o", input="hello", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") == 16
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == reply_text(16)
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == reply_text(16)
    assert final.response.usage is not None and final.response.usage.output_tokens == 16


async def test_responses_stream_helper(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(model="gpt-4o", input="hello") as stream:
        text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert text == final.output_text == reply_text(16)
    assert final.usage is not None and final.usage.input_tokens == 1


# --- Anthropic Messages -------------------------------------------------------------------


def claude_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "hello there world"}],
        **extra,
    }


async def test_anthropic_message(mock: MockUpstream, claude: anthropic.AsyncAnthropic) -> None:
    body = claude_body()
    message = await claude.messages.create(**body)
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-haiku-4-5"
    block = message.content[0]
    assert block.type == "text" and block.text == reply_text(16)
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == prompt_tokens_for(body) == 12
    assert message.usage.output_tokens == 16
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    recorded = mock.requests[-1]
    assert recorded.path == "/v1/messages"
    # This SDK sends the key as a bearer token, not as x-api-key.
    assert recorded.headers["authorization"] == "Bearer x"

    short = await claude.messages.create(**claude_body(max_tokens=2))
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 2


async def test_anthropic_cache_usage(claude: anthropic.AsyncAnthropic) -> None:
    body = claude_body(metadata={"mock_cached_tokens": 5, "mock_cache_creation_tokens": 2})
    message = await claude.messages.create(**body)
    # Anthropic's input_tokens excludes cache reads and writes.
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.cache_creation_input_tokens == 2
    assert message.usage.input_tokens == prompt_tokens_for(body) - 7


async def test_anthropic_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    tool = {
        "name": "lookup",
        "description": "look something up",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    message = await claude.messages.create(**claude_body(tools=[tool]))
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "lookup" and block.input == {"q": "mock"}

    async with claude.messages.stream(**claude_body(tools=[tool])) as stream:
        final = await stream.get_final_message()
    streamed = final.content[0]
    assert streamed.type == "tool_use" and streamed.input == {"q": "mock"}


async def test_anthropic_streaming(claude: anthropic.AsyncAnthropic) -> None:
    body = claude_body()
    raw = await claude.messages.create(**body, stream=True)
    events = [event async for event in raw]
    # The SDK drops `ping` events; the raw-frame test below sees them.
    assert [e.type for e in events[:2]] == ["message_start", "content_block_start"]
    assert [e.type for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert sum(1 for e in events if e.type == "content_block_delta") == 16
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == prompt_tokens_for(body)
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 16

    async with claude.messages.stream(**body) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == reply_text(16)
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 16


async def test_anthropic_raw_event_sequence(
    mock: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = claude_body(stream=True, max_tokens=2)
    headers = {"x-api-key": "k"}
    async with http.post(mock.url + "/v1/messages", json=body, headers=headers) as resp:
        text = await resp.text()
    frames = [f for f in text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for frame, name in zip(frames, names, strict=True):
        assert json.loads(frame.split("\n")[1].removeprefix("data: "))["type"] == name
    assert json.loads(frames[-2].split("\n")[1][6:])["delta"]["stop_reason"] == "max_tokens"
    assert mock.requests[-1].headers["x-api-key"] == "k"


async def test_anthropic_requires_a_key(mock: MockUpstream, http: aiohttp.ClientSession) -> None:
    async with http.post(mock.url + "/v1/messages", json=claude_body()) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    headers = {"authorization": "Bearer k"}
    async with http.post(mock.url + "/messages", json=claude_body(), headers=headers) as resp:
        assert resp.status == 200


# --- injections ---------------------------------------------------------------------------


async def test_injected_status_expires_after_times(
    mock: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    mock.inject(status=500, times=1, message="boom")
    with pytest.raises(openai.InternalServerError) as failure:
        await oai.chat.completions.create(**chat_body())
    assert failure.value.status_code == 500
    assert isinstance(failure.value.body, dict)
    assert failure.value.body["message"] == "boom"
    assert failure.value.body["type"] == "server_error"
    assert (await oai.chat.completions.create(**chat_body())).choices
    assert mock.state.injections == []


async def test_injection_model_and_path_filters(
    mock: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    mock.inject(status=429, model="gpt-4o", retry_after_s=2)
    await oai.chat.completions.create(**chat_body())  # gpt-4o-mini is unaffected
    for _ in range(2):  # no `times`: applies until cleared
        with pytest.raises(openai.RateLimitError) as failure:
            await oai.chat.completions.create(**chat_body(model="gpt-4o"))
    assert failure.value.response.headers["retry-after"] == "2"
    assert failure.value.code == "rate_limit_exceeded"
    mock.clear_injections()
    await oai.chat.completions.create(**chat_body(model="gpt-4o"))

    mock.inject(status=503, path="/embeddings")
    await oai.chat.completions.create(**chat_body())
    with pytest.raises(openai.InternalServerError):
        await oai.embeddings.create(model="text-embedding-3-small", input="x")


async def test_injections_apply_in_order(mock: MockUpstream, oai: openai.AsyncOpenAI) -> None:
    mock.inject(status=400, times=1)
    mock.inject(status=401)
    with pytest.raises(openai.BadRequestError):
        await oai.models.list()
    with pytest.raises(openai.AuthenticationError):
        await oai.models.list()


async def test_status_header_is_a_one_off(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failure:
        await oai.chat.completions.create(**chat_body(), extra_headers={"x-mock-status": "503"})
    assert failure.value.status_code == 503
    assert (await oai.chat.completions.create(**chat_body())).choices


async def test_timeout_injection_does_not_block_others(mock: MockUpstream) -> None:
    mock.inject(mode="timeout", model="gpt-4o")
    client = openai.AsyncOpenAI(base_url=mock.base_url, api_key="x", max_retries=0, timeout=0.3)
    try:
        slow = asyncio.create_task(client.chat.completions.create(**chat_body(model="gpt-4o")))
        fast = await client.chat.completions.create(**chat_body())
        assert fast.choices[0].message.content == reply_text(16)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await slow
        assert time.monotonic() - started < 2
    finally:
        await client.close()


async def test_timeout_injection_with_delay_then_answers(
    mock: MockUpstream, oai: openai.AsyncOpenAI
) -> None:
    mock.inject(mode="timeout", delay_s=0.05, status=502, times=1)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(**chat_body())
    assert time.monotonic() - started >= 0.05


async def test_disconnect_injection(mock: MockUpstream, oai: openai.AsyncOpenAI) -> None:
    mock.inject(mode="disconnect", times=1)
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(**chat_body())

    mock.inject(mode="disconnect", after_chunks=3, times=1)
    stream = await oai.chat.completions.create(**chat_body(), stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3


async def test_disconnect_mid_anthropic_stream(
    mock: MockUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    mock.inject(mode="disconnect", after_chunks=5)
    received = 0
    # Anthropic SDKs before 2.17 let the transport error through mid-stream unwrapped; later
    # ones wrap it in APIConnectionError. Either way it is the peer's cut, after some events.
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)) as failure:
        async with claude.messages.stream(**claude_body()) as stream:
            async for _ in stream:
                received += 1
    cut = failure.value
    if isinstance(cut, anthropic.APIConnectionError):
        cut = cut.__cause__
    assert isinstance(cut, httpx2.RemoteProtocolError)
    assert received > 0


async def test_anthropic_errors_are_anthropic_shaped(
    mock: MockUpstream, claude: anthropic.AsyncAnthropic
) -> None:
    mock.inject(status=529, times=1)
    with pytest.raises(anthropic.APIStatusError) as failure:
        await claude.messages.create(**claude_body())
    assert failure.value.status_code == 529
    assert isinstance(failure.value.body, dict)
    assert failure.value.body["error"]["type"] == "overloaded_error"


async def test_control_endpoints(mock: MockUpstream, http: aiohttp.ClientSession) -> None:
    injection = {"status": 418, "model": "gpt-4o", "times": 2}
    async with http.post(mock.url + "/_mock/inject", json=injection) as resp:
        assert resp.status == 200
        assert (await resp.json())[0]["times"] == 2
    async with http.get(mock.url + "/_mock/inject") as resp:
        assert len(await resp.json()) == 1
    body = chat_body(model="gpt-4o")
    async with http.post(mock.base_url + "/chat/completions", json=body) as resp:
        assert resp.status == 418
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with http.delete(mock.url + "/_mock/inject") as resp:
        assert (await resp.json()) == {"cleared": 1}
    async with http.post(mock.base_url + "/chat/completions", json=body) as resp:
        assert resp.status == 200

    async with http.get(mock.url + "/_mock/requests") as resp:
        records = await resp.json()
    assert [r["body"]["model"] for r in records] == ["gpt-4o", "gpt-4o"]
    assert records[0]["path"] == "/v1/chat/completions" and records[0]["method"] == "POST"
    async with http.delete(mock.url + "/_mock/requests") as resp:
        assert (await resp.json()) == {"cleared": 2}
    assert mock.requests == []

    for bad in ({"stauts": 500}, {"mode": "explode"}, {"status": "500"}, {}):
        async with http.post(mock.url + "/_mock/inject", json=bad) as resp:
            assert resp.status == 400, bad
    async with http.get(mock.url + "/healthz") as resp:
        assert resp.status == 200 and await resp.text() == "ok"


# --- recording ----------------------------------------------------------------------------


async def test_recording(mock: MockUpstream, oai: openai.AsyncOpenAI) -> None:
    before = time.monotonic()
    await oai.chat.completions.create(**chat_body(model="gpt-4o"))
    await oai.models.list()
    first, second = mock.requests
    assert first.method == "POST" and first.path == "/v1/chat/completions"
    assert first.model == "gpt-4o"
    assert first.headers["authorization"] == "Bearer x"
    assert all(name == name.lower() for name in first.headers)
    assert first.body is not None and first.body["messages"][1]["content"] == "hello there world"
    assert before <= first.time <= second.time
    assert second.method == "GET" and second.body is None
    mock.clear()
    assert mock.requests == []


async def test_record_limit_drops_oldest(http: aiohttp.ClientSession) -> None:
    async with MockUpstream(MockOptions(record_limit=3)) as small:
        for i in range(5):
            body = chat_body(model=f"m{i}")
            async with http.post(small.base_url + "/chat/completions", json=body) as resp:
                assert resp.status == 200
        assert [r.model for r in small.requests] == ["m2", "m3", "m4"]


async def test_bad_json_is_a_400(mock: MockUpstream, http: aiohttp.ClientSession) -> None:
    async with http.post(mock.base_url + "/chat/completions", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


# --- CLI ----------------------------------------------------------------------------------


async def test_cli_serves_until_interrupted(http: aiohttp.ClientSession) -> None:
    code = "from gateway.providers.mock import main; raise SystemExit(main())"
    args = ["--port", "0", "--latency-ms", "1", "--completion-tokens", "3", "--no-usage"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("mock upstream listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        async with http.post(url + "/v1/chat/completions", json=chat_body()) as resp:
            answer = await resp.json()
        assert answer["choices"][0]["message"]["content"] == "mock reply 1"
        assert "usage" not in answer
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
