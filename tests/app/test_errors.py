"""The error table: every way a request can be refused comes back in OpenAI's error shape with
the status the OpenAI SDK expects (so its retry logic does the right thing)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from gateway.app.server import create_app
from gateway.config.loader import load_config
from gateway.providers.mock import MockUpstream
from tests.clock import RunningClock
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def post(
    gateway: Gateway, path: str, data: bytes | None = None, json: Any = None, key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway.url + path, data=data, json=json, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_malformed_json_is_400(gateway: Gateway) -> None:
    status, body, _ = await post(
        gateway, "/v1/chat/completions", data=b'{"model": "gpt-4o",', key=gateway.keys["alpha"]
    )
    assert status == 400
    assert error_of(body)["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": "hello"}, "messages"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"temperature": "hot"}, "temperature"),
        ({"model": 4}, "model"),
        ({"messages": [{"content": "no role"}]}, "messages[0]"),
        ({"n": 0}, "n"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(
    gateway: Gateway, patch: dict[str, Any], param: str
) -> None:
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json={**CHAT, **patch}, key=gateway.keys["alpha"]
    )
    assert status == 400
    assert error_of(body)["param"] == param


async def test_json_that_is_not_an_object_is_400(gateway: Gateway) -> None:
    status, body, _ = await post(
        gateway, "/v1/embeddings", data=b"[1, 2]", key=gateway.keys["alpha"]
    )
    assert status == 400
    assert "JSON object" in error_of(body)["message"]


async def test_body_over_the_limit_is_413(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json=huge, key=gateway.keys["alpha"]
    )
    assert status == 413
    assert error_of(body)["code"] == "request_too_large"
    assert mock_upstream.requests == []


async def test_missing_unknown_and_revoked_keys_are_401(gateway: Gateway) -> None:
    status, body, _ = await post(gateway, "/v1/chat/completions", json=CHAT)
    assert (status, error_of(body)["code"]) == (401, "invalid_api_key")
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json=CHAT, key="sk-sg-not-a-real-key-at-all-000000"
    )
    assert status == 401
    assert "sk-sg-not-a-real-key" not in body["error"]["message"]

    key = gateway.keys["beta"]
    assert (await post(gateway, "/v1/chat/completions", json=CHAT, key=key))[0] == 200
    async with aiohttp.ClientSession() as http:
        async with http.get(
            gateway.url + "/admin/keys",
            params={"team": "beta"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as response:
            key_id = (await response.json())["data"][0]["key_id"]
        async with http.delete(
            gateway.url + f"/admin/keys/{key_id}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as response:
            assert response.status == 200
    status, body, _ = await post(gateway, "/v1/chat/completions", json=CHAT, key=key)
    assert (status, error_of(body)["type"]) == (401, "authentication_error")


async def test_unknown_model_is_404_model_not_found(gateway: Gateway) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-9", messages=CHAT["messages"])
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


async def test_unknown_route_and_method_are_openai_shaped(gateway: Gateway) -> None:
    status, body, _ = await post(gateway, "/v1/nope", json={}, key=gateway.keys["alpha"])
    assert (status, error_of(body)["code"]) == (404, "not_found")
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + "/v1/chat/completions") as response,
    ):
        assert response.status == 405
        assert error_of(await response.json())["code"] == "method_not_allowed"


async def test_upstream_5xx_after_retries_is_502_with_its_message_minus_secrets(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.inject(
        status=500,
        model="gpt-4o-mini",
        message="backend exploded; key sk-proj-abcdef1234567890XYZ rejected",
    )
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json=CHAT, key=gateway.keys["alpha"]
    )
    assert status == 502
    message = error_of(body)["message"]
    assert "backend exploded" in message
    assert "abcdef1234567890" not in message and "[redacted]" in message
    # retries: 2 by default -> three attempts reached the upstream.
    assert len(mock_upstream.requests) == 3


async def test_upstream_timeout_is_504(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.inject(mode="timeout", delay_s=30, model="hasty-model")
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json={**CHAT, "model": "hasty"}, key=gateway.keys["alpha"]
    )
    assert (status, error_of(body)["code"]) == (504, "upstream_timeout")
    assert len(mock_upstream.requests) == 2  # retries: 1


async def test_upstream_400_is_passed_back_without_retry(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.inject(status=400, message="'messages' is too long for this model")
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json=CHAT, key=gateway.keys["alpha"]
    )
    assert status == 400
    assert "too long for this model" in error_of(body)["message"]
    assert len(mock_upstream.requests) == 1


async def test_upstream_429_outlasting_retries_stays_429(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.inject(status=429)
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(**CHAT)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port this test holds without listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class Warned(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage() and record.levelno == logging.WARNING:
            self.seen.set()


async def test_the_default_config_without_its_upstream_says_what_to_start(
    refused_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("SPENDGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # the local store's var/store, as in a new user's directory
    url = f"http://127.0.0.1:{refused_port}/v1"
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", url)
    hint = f"The default config sends requests to {url}, from SPENDGATE_UPSTREAM_URL"
    warned = Warned(f"upstream mock cannot be reached (Connection refused). {hint}")
    logging.getLogger("spendgate.app").addHandler(warned)
    clock = RunningClock()
    server = TestServer(create_app(load_config(None), clock=clock))
    try:
        await server.start_server()
        async with asyncio.timeout(10):
            await warned.seen.wait()  # at start, before any request
        gateway = Gateway(server, server.app, Path("default"), clock)
        key = "sk-sg-demo-search-key-0001"  # declared by the default config
        status, body, _ = await post(gateway, "/v1/chat/completions", json=CHAT, key=key)
        assert status == 502
        message = error_of(body)["message"]
        assert message.startswith(f"cannot connect to upstream mock: Connection refused. {hint}")
        assert "`spendgate mock-upstream`" in message
        # Once the circuit opens, the 503 still says why.
        for _ in range(5):
            status, body, _ = await post(gateway, "/v1/chat/completions", json=CHAT, key=key)
            if status == 503:
                break
        assert status == 503
        assert error_of(body)["message"].endswith(f"cooling down (last failure: {message})")
    finally:
        logging.getLogger("spendgate.app").removeHandler(warned)
        await server.close()


async def test_a_configured_upstream_that_refuses_is_named_without_advice(
    gateway_factory: GatewayFactory, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", f"http://127.0.0.1:{refused_port}/v1")
    gateway = await gateway_factory()
    status, body, _ = await post(
        gateway, "/v1/chat/completions", json=CHAT, key=gateway.keys["alpha"]
    )
    assert status == 502
    assert error_of(body)["message"] == "cannot connect to upstream mock: Connection refused"
