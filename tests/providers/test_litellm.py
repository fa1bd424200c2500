"""The litellm-translated provider: Anthropic's Messages API (the mock's /v1/messages) behind the
gateway's OpenAI surface, streaming included, with usage accounted. And the OpenAI-compatible
path never imports litellm."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import openai
import pytest

from gateway.providers.mock import MockUpstream
from tests.conftest import GatewayFactory

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
]


async def test_anthropic_through_litellm_stream_and_not(
    gateway_factory: GatewayFactory, mock_upstream: MockUpstream
) -> None:
    gateway = await gateway_factory("litellm.yaml")
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-haiku", messages=MESSAGES, max_tokens=5
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == "mock reply 1 2 3"
        sent = mock_upstream.requests[-1]
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == "anthropic-secret-key-424242"
        assert sent.body is not None and sent.body["model"] == "claude-haiku-4-5"
        # Anthropic counts the system prompt separately: (3 + 2) + (3 + 2) = 10 input tokens.
        assert completion.usage.prompt_tokens == 10
        # claude-haiku-4-5: $1 / 1M input, $5 / 1M output -> 10 * 1 + 5 * 5 = 35 per 1M.
        assert raw.headers["x-sg-cost-usd"] == "0.000035000"
        assert raw.headers["x-sg-model"] == "claude-haiku-4-5"

        stream = await client.chat.completions.create(
            model="claude-haiku", messages=MESSAGES, max_tokens=4, stream=True
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "mock reply 1 2"
    )
    assert all(c.choices for c in chunks), "the usage chunk was not asked for"
    assert mock_upstream.requests[-1].body["stream"] is True
    # Both calls billed: 35 + (10 * 1 + 4 * 5) = 65 per 1M.
    assert gateway.metric("sg_cost_usd_total", team="alpha", model="claude-haiku") == (
        pytest.approx(0.000065)
    )


async def test_anthropic_errors_fail_over_and_surface_in_openai_shape(
    gateway_factory: GatewayFactory, mock_upstream: MockUpstream
) -> None:
    gateway = await gateway_factory("litellm.yaml")
    mock_upstream.inject(status=529, path="/v1/messages")
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="claude-haiku", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert len(mock_upstream.requests) == 3  # the default two retries


def test_openai_compatible_traffic_never_imports_litellm() -> None:
    script = textwrap.dedent("""
        import asyncio, os, sys
        from aiohttp.test_utils import TestServer
        from gateway.providers.mock import MockUpstream

        async def main():
            async with MockUpstream() as mock:
                os.environ["SPENDGATE_UPSTREAM_URL"] = mock.base_url
                os.environ["SPENDGATE_ADMIN_KEY"] = "sk-sg-admin-test-key-0123456789"
                from gateway.app.server import create_app
                from gateway.app.state import KEYRING
                from gateway.config.loader import load_config
                import aiohttp
                app = create_app(load_config("tests/fixtures/gateway.yaml"))
                server = TestServer(app)
                await server.start_server()
                key, _ = await app[KEYRING].create("alpha")
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        str(server.make_url("/v1/chat/completions")),
                        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}],
                              "stream": True},
                        headers={"Authorization": "Bearer " + key},
                    ) as response:
                        assert response.status == 200, response.status
                        await response.read()
                await server.close()
            print("litellm" in sys.modules)

        asyncio.run(main())
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
