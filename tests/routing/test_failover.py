"""Retries, fallback and circuit breaking against injected upstream failures, through sockets.

The `resilient` model (tests/fixtures/gateway.yaml) has two deployments in order: `primary`
(model primary-model on provider mock) and `secondary` (backup-model on provider backup); the
mock records which model every attempt asked for.
"""

from __future__ import annotations

import openai
import pytest

from gateway.providers.mock import MockUpstream
from tests.conftest import Gateway

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def client(gateway: Gateway) -> openai.AsyncOpenAI:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as c:
        yield c


def reached(mock: MockUpstream) -> list[str | None]:
    return [r.model for r in mock.requests]


@pytest.mark.parametrize("failure", [{"status": 503}, {"status": 429}, {"mode": "disconnect"}])
async def test_a_failing_primary_falls_back_to_the_secondary(
    client: openai.AsyncOpenAI,
    mock_upstream: MockUpstream,
    gateway: Gateway,
    failure: dict[str, object],
) -> None:
    mock_upstream.inject(model="primary-model", times=1, **failure)  # type: ignore[arg-type]
    raw = await client.chat.completions.with_raw_response.create(
        model="resilient", messages=MESSAGES
    )
    assert raw.headers["x-sg-model"] == "backup-model"
    assert reached(mock_upstream) == ["primary-model", "backup-model"]
    assert gateway.metric("sg_upstream_retries_total", model="resilient") == 1
    assert gateway.metric("sg_upstream_errors_total", deployment="primary") == 1


async def test_timeouts_fail_over_too(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.inject(mode="timeout", delay_s=30, model="hasty-model", times=1)
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="hasty", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert reached(mock_upstream) == ["hasty-model", "hasty-model"]
    assert (
        gateway.metric(
            "sg_upstream_errors_total", deployment="impatient/hasty-model", reason="timeout"
        )
        == 1
    )


async def test_the_circuit_opens_after_repeated_failures_and_skips_the_deployment(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, gateway: Gateway
) -> None:
    mock_upstream.inject(status=500, model="primary-model")
    # failure_threshold is 3 for provider mock: three requests each fail once on the primary.
    for _ in range(3):
        await client.chat.completions.create(model="resilient", messages=MESSAGES)
    assert reached(mock_upstream).count("primary-model") == 3
    assert gateway.metric("sg_circuit_state", deployment="primary") == 2  # open
    mock_upstream.clear_requests()
    for _ in range(5):
        raw = await client.chat.completions.with_raw_response.create(
            model="resilient", messages=MESSAGES
        )
        assert raw.headers["x-sg-model"] == "backup-model"
    # While open, the primary is not even tried.
    assert reached(mock_upstream) == ["backup-model"] * 5


async def test_when_every_deployment_is_down_the_client_gets_503_with_retry_after(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    mock_upstream.inject(status=503)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="resilient", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="resilient", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert int(caught.value.response.headers["retry-after"]) >= 1


async def test_a_stream_fails_over_before_its_first_byte(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream
) -> None:
    mock_upstream.inject(status=502, model="primary-model", times=1)
    stream = await client.chat.completions.create(
        model="resilient", messages=MESSAGES, stream=True, max_tokens=3
    )
    chunks = [c async for c in stream]
    assert chunks[0].model == "backup-model"
    assert reached(mock_upstream) == ["primary-model", "backup-model"]


async def test_a_stream_broken_after_its_first_byte_is_not_replayed(
    client: openai.AsyncOpenAI, mock_upstream: MockUpstream, gateway: Gateway
) -> None:
    mock_upstream.inject(mode="disconnect", after_chunks=3, model="primary-model", times=1)
    stream = await client.chat.completions.create(
        model="resilient", messages=MESSAGES, stream=True, max_tokens=10
    )
    pieces = []
    with pytest.raises(openai.APIError, match="upstream mock connection failed"):
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    # The client got what was generated before the break, then an error event; from the
    # primary only.
    assert "".join(pieces).split() == ["mock", "reply"]
    assert reached(mock_upstream) == ["primary-model"]
    # ... and is billed for it (counted with tiktoken, as the upstream never sent usage).
    assert gateway.metric("sg_tokens_total", team="alpha", model="resilient", kind="completion") > 0
