"""Cost through the whole path, checked against hand-computed figures: cached and reasoning
tokens, price overrides, upstreams without usage (counted with tiktoken), and a client that
disconnects mid-stream, who is still billed for what was generated."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import openai
import pytest
import tiktoken

from gateway.pricing.tokens import count_chat_prompt
from gateway.providers.mock import MockUpstream
from tests.conftest import Gateway

MESSAGES = [{"role": "user", "content": "one two three four five six seven"}]  # 3 + 7 = 10


async def chat(gateway: Gateway, **extra: Any) -> tuple[str, Any]:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(messages=MESSAGES, **extra)
    return raw.headers["x-sg-cost-usd"], raw.parse()


@pytest.mark.parametrize(
    ("model", "metadata", "max_tokens", "expected"),
    [
        # gpt-4o ($2.50 in, $1.25 cached in, $10 out per 1M): 10 prompt tokens of which 4 cached,
        # 8 completion: 6 * 2.5 + 4 * 1.25 + 8 * 10 = 15 + 5 + 80 = 100 per 1M = $0.0001.
        ("gpt-4o", {"mock_cached_tokens": "4"}, 8, "0.000100000"),
        # o3-mini ($1.10 in, $0.55 cached, $4.40 out incl. reasoning): 10 prompt (2 cached),
        # 5 visible + 20 reasoning = 25 completion: 8 * 1.1 + 2 * 0.55 + 25 * 4.4
        # = 8.8 + 1.1 + 110 = 119.9 per 1M.
        ("o3-mini", {"mock_cached_tokens": "2", "mock_reasoning_tokens": "20"}, 5, "0.000119900"),
        # gpt-4o-mini ($0.15 in, $0.075 cached, $0.60 out): 10 prompt (10 cached), 3 completion:
        # 10 * 0.075 + 3 * 0.6 = 0.75 + 1.8 = 2.55 per 1M.
        ("gpt-4o-mini", {"mock_cached_tokens": "10"}, 3, "0.000002550"),
        # house-llama, priced by override at $0.59 in / $0.79 out: 10 * 0.59 + 7 * 0.79
        # = 5.9 + 5.53 = 11.43 per 1M.
        ("house-llama", {}, 7, "0.000011430"),
    ],
)
async def test_cost_matches_hand_computed_figures(
    gateway: Gateway, model: str, metadata: dict[str, str], max_tokens: int, expected: str
) -> None:
    cost, completion = await chat(gateway, model=model, metadata=metadata, max_tokens=max_tokens)
    assert cost == expected
    assert gateway.metric("sg_cost_usd_total", team="alpha", model=model) == pytest.approx(
        float(expected)
    )
    assert gateway.metric("sg_tokens_total", team="alpha", model=model, kind="prompt") == 10
    assert gateway.metric("sg_tokens_total", team="alpha", model=model, kind="completion") == (
        completion.usage.completion_tokens
    )


async def test_an_upstream_without_usage_is_counted_with_tiktoken(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.report_usage = False
    cost, completion = await chat(gateway, model="gpt-4o", max_tokens=5)
    assert completion.usage is None
    encoding = tiktoken.get_encoding("o200k_base")
    completion_tokens = len(encoding.encode(completion.choices[0].message.content))
    prompt_tokens = count_chat_prompt(MESSAGES, "gpt-4o")
    assert gateway.metric("sg_tokens_total", model="gpt-4o", kind="completion") == (
        completion_tokens
    )
    assert gateway.metric("sg_tokens_total", model="gpt-4o", kind="prompt") == prompt_tokens
    expected_per_m = prompt_tokens * 2.5 + completion_tokens * 10
    assert float(cost) == pytest.approx(expected_per_m / 1e6)


class AccessLineWatcher(logging.Handler):
    """Sets `seen` when the gateway logs a request with the given outcome (it accounts for a
    disconnected client on its own schedule, after noticing the disconnect)."""

    def __init__(self, outcome: str) -> None:
        super().__init__()
        self.outcome = outcome
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "access", {}).get("outcome") == self.outcome:
            self.seen.set()


async def test_a_client_that_disconnects_mid_stream_is_billed_for_what_was_generated(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.chunk_delay_s = 0.02
    watcher = AccessLineWatcher("client_disconnected")
    access_log = logging.getLogger("spendgate.access")
    access_log.addHandler(watcher)
    access_log.setLevel(logging.INFO)
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 200, "stream": True}
    seen = b""
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gateway.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gateway.keys['alpha']}"},
        )
        while seen.count(b"\n\n") < 5:
            seen += await response.content.readany()
        response.close()  # the client goes away after a few chunks
    try:
        await asyncio.wait_for(watcher.seen.wait(), timeout=5)
    finally:
        access_log.removeHandler(watcher)
    assert gateway.metric("sg_requests_total", status="499") == 1
    completion = gateway.metric("sg_tokens_total", model="gpt-4o", kind="completion")
    # It saw about 4 words; the gateway saw a few more before noticing; never all 200.
    assert 3 <= completion < 200
    assert gateway.metric("sg_tokens_total", model="gpt-4o", kind="prompt") > 0
    assert gateway.metric("sg_cost_usd_total", team="alpha", model="gpt-4o") > 0
    # The gateway stopped reading: the upstream stream was closed well before its end.
    assert len(mock_upstream.requests) == 1
