"""The official OpenAI SDK, pointed at the gateway, against the mock upstream: every endpoint,
streaming and not, works as it does against OpenAI, and each answer is priced."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from gateway.app.state import PIPELINE
from gateway.providers.mock import MockUpstream
from gateway.providers.mock.embeddings import embedding_for
from gateway.providers.mock.tokens import prompt_tokens_for
from tests.conftest import Gateway, GatewayFactory

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three prime numbers please"},
]


@pytest.fixture
async def client(gateway: Gateway) -> openai.AsyncOpenAI:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as c:
        yield c


async def test_chat_completion_is_passed_through_and_priced(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=6
    )
    completion = raw.parse()
    # The mock counts 3 + words per message: (3 + 3) + (3 + 5) = 14 prompt tokens.
    assert completion.usage.prompt_tokens == 14 == prompt_tokens_for({"messages": MESSAGES})
    assert completion.usage.completion_tokens == 6
    assert completion.choices[0].finish_reason == "length"
    # gpt-4o: $2.50 / 1M input, $10 / 1M output -> 14 * 2.5 + 6 * 10 = 95 USD per 1M tokens.
    assert raw.headers["x-sg-cost-usd"] == "0.000095000"
    assert raw.headers["x-sg-model"] == "gpt-4o"
    assert raw.headers["x-request-id"].startswith("req_")
    sent = mock_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body is not None and sent.body["messages"] == MESSAGES
    # The upstream sees the provider's key, never the client's virtual key.
    assert sent.headers["authorization"] == "Bearer upstream-secret-key-123456789"


async def test_client_request_id_is_kept(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": "trace-42"}
    )
    assert raw.headers["x-request-id"] == "trace-42"


async def test_streaming_chat_hides_the_usage_chunk_it_asked_for(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, gateway: Gateway
) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["mock", "reply", "1", "2", "3"]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach this client"
    sent = mock_upstream.requests[-1].body
    assert sent is not None and sent["stream_options"] == {"include_usage": True}
    # Billed from the upstream's usage: 14 prompt + 5 completion tokens of gpt-4o-mini
    # ($0.15 / $0.60 per 1M): 14 * 0.15 + 5 * 0.6 = 5.1 USD per 1M = 0.0000051 USD.
    assert gateway.metric("sg_cost_usd_total", team="alpha", model="gpt-4o-mini") == (
        pytest.approx(0.0000051)
    )


async def test_streaming_chat_keeps_usage_for_clients_that_ask(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (14, 4)


async def test_tools_json_mode_and_n_pass_through(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    called = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert mock_upstream.requests[-1].body["tools"] == tools

    as_json = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(as_json.choices[0].message.content or ""), dict)

    two = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=2, max_tokens=3)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.usage.completion_tokens == 6


async def test_legacy_completions_stream_and_not(client: openai.AsyncOpenAI) -> None:
    raw = await client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hello to the team", max_tokens=3
    )
    completion = raw.parse()
    assert completion.choices[0].text.split() == ["mock", "reply", "1"]
    # gpt-3.5-turbo-instruct: $1.50 / $2.00 per 1M; 5 prompt + 3 completion = 13.5 per 1M.
    assert raw.headers["x-sg-cost-usd"] == "0.000013500"
    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=3, stream=True
    )
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text.split() == ["mock", "reply", "1"]


async def test_embeddings_base64_vectors_arrive_intact(client: openai.AsyncOpenAI) -> None:
    raw = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["alpha beta", "gamma"]
    )
    result = raw.parse()
    assert [d.embedding for d in result.data] == [
        pytest.approx(embedding_for("alpha beta")),
        pytest.approx(embedding_for("gamma")),
    ]
    assert result.usage.prompt_tokens == 3
    # text-embedding-3-small: $0.02 / 1M tokens -> 3 * 0.02 = 0.06 per 1M.
    assert raw.headers["x-sg-cost-usd"] == "0.000000060"


async def test_embeddings_float_format(gateway: Gateway) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"},
            headers={"Authorization": f"Bearer {gateway.keys['beta']}"},
        ) as response,
    ):
        body = await response.json()
    packed = base64.b64decode(body["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert list(floats) == pytest.approx(embedding_for("x"))


async def test_models_lists_the_configured_names(
    client: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == list(gateway.app[PIPELINE].config.models)
    assert "gpt-4o" in models and "resilient" in models


async def test_models_lists_tiers_as_models_and_retrieves_each(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory("optimizers.yaml")
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        listed = [m async for m in client.models.list()]
        assert [m.id for m in listed] == [
            "gpt-4o",
            "gpt-4o-mini",
            "text-embedding-3-small",
            "auto",
            "smart",
        ]
        assert {(m.object, m.created, m.owned_by) for m in listed} == {("model", 0, "spendgate")}
        for model in listed:
            assert await client.models.retrieve(model.id) == model
        with pytest.raises(openai.NotFoundError) as refused:
            await client.models.retrieve("gpt-5-turbo-max")
        assert refused.value.code == "model_not_found"
        # What the list offers can be asked for: a tier answers as one of its candidates.
        reply = await client.chat.completions.create(model="auto", messages=MESSAGES)
        assert reply.model == "gpt-4o-mini"


async def test_responses_api_stream_and_not(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, gateway: Gateway
) -> None:
    raw = await client.responses.with_raw_response.create(
        model="o3-mini",
        input="Explain budgets briefly",
        max_output_tokens=4,
        metadata={"mock_reasoning_tokens": "2", "mock_cached_tokens": "1"},
    )
    response = raw.parse()
    assert response.output_text.split() == ["mock", "reply", "1", "2"]
    assert mock_upstream.requests[-1].path == "/v1/responses"
    assert response.usage.output_tokens == 6  # 4 visible + 2 hidden reasoning tokens
    # o3-mini: $1.10 input, $0.55 cached input, $4.40 output (reasoning too) per 1M. Prompt:
    # 3 words, 1 of them cached; output 6 tokens: 2 * 1.10 + 1 * 0.55 + 6 * 4.40 = 29.15 per 1M.
    assert raw.headers["x-sg-cost-usd"] == "0.000029150"

    stream = await client.responses.create(
        model="o3-mini", input="Explain budgets briefly", max_output_tokens=3, stream=True
    )
    events = [event async for event in stream]
    # Cut short by max_output_tokens, as OpenAI does: the last event is response.incomplete.
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 3
    # Streamed: 3 * 1.10 + 3 * 4.40 = 16.5 per 1M, on top of the first call.
    assert gateway.metric("sg_cost_usd_total", team="alpha", model="o3-mini") == pytest.approx(
        0.00002915 + 0.0000165
    )


async def test_an_output_cap_is_sent_when_the_client_sets_none(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=7)
    await client.responses.create(model="o3-mini", input="hi")
    first, second, third = (r.body for r in mock_upstream.requests)
    assert first is not None and first["max_completion_tokens"] == 4096  # server default
    assert second is not None and "max_completion_tokens" not in second
    assert second["max_tokens"] == 7
    assert third is not None and third["max_output_tokens"] == 4096
