"""Hot reload on a running gateway: a config swap under load drops no request, requests see the
new config afterwards, and a bad edit is refused with the old config still serving."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from gateway.app.state import LIVE_CONFIG
from gateway.providers.mock import MockUpstream
from tests.conftest import Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "hello"}]


async def test_a_reload_under_load_drops_no_request(
    gateway_factory: GatewayFactory, mock_upstream: MockUpstream
) -> None:
    gateway = await gateway_factory()
    mock_upstream.options.chunk_delay_s = 0.001  # keep streams in flight across the swap
    live = gateway.app[LIVE_CONFIG]
    statuses: list[int] = []
    swapped = asyncio.Event()

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for i in range(25):
            body = {
                "model": "gpt-4o",
                "messages": MESSAGES,
                "max_tokens": 5,
                "stream": (n + i) % 2 == 0,
            }
            async with http.post(gateway.base_url + "/chat/completions", json=body) as response:
                await response.read()
                statuses.append(response.status)
            if n == 0 and i == 10:
                # Mid-run: point gpt-4o at another upstream model and add a new model name.
                text = gateway.config_path.read_text()
                text = text.replace(
                    "      - {provider: mock, model: gpt-4o}\n",
                    "      - {provider: backup, model: gpt-4o-2024-08-06}\n",
                )
                text = text.replace(
                    "  gpt-4o-mini:\n",
                    "  fresh:\n    deployments:\n"
                    "      - {provider: mock, model: gpt-4o-mini}\n"
                    "  gpt-4o-mini:\n",
                )
                gateway.config_path.write_text(text)
                assert live.reload() is True
                swapped.set()

    headers = {"Authorization": f"Bearer {gateway.keys['alpha']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(*(client(http, n) for n in range(16)))
        assert swapped.is_set()
        assert statuses == [200] * 400
        served = {r.model for r in mock_upstream.requests}
        assert served == {"gpt-4o", "gpt-4o-2024-08-06"}
        # After the swap every new request uses the new deployment and the new model exists.
        mock_upstream.clear_requests()
        async with http.post(
            gateway.base_url + "/chat/completions", json={"model": "fresh", "messages": MESSAGES}
        ) as response:
            assert response.status == 200
    assert gateway.metric("sg_config_reloads_total", result="ok") == 1


async def test_a_bad_reload_is_refused_and_the_running_config_stays(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    live = gateway.app[LIVE_CONFIG]
    before = live.current
    good = gateway.config_path.read_text()
    gateway.config_path.write_text(good.replace("retries: 3", "retires: 3"))
    with caplog.at_level(logging.ERROR, logger="spendgate.config"):
        assert live.reload() is False
    assert live.current is before
    assert gateway.metric("sg_config_reloads_total", result="failed") == 1
    logged = caplog.text
    assert str(gateway.config_path) in logged
    assert "models.resilient.retires" in logged and "did you mean 'retries'" in logged
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.base_url + "/chat/completions",
            json={"model": "resilient", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {gateway.keys['alpha']}"},
        ) as response,
    ):
        assert response.status == 200


async def test_the_file_watcher_reloads_an_edited_config(gateway: Gateway) -> None:
    live = gateway.app[LIVE_CONFIG]
    changed = asyncio.Event()
    live.listeners.append(lambda old, new: changed.set())
    text = gateway.config_path.read_text()
    gateway.config_path.write_text(
        text.replace(
            "  gpt-4o-mini:\n",
            "  watched:\n"
            "    deployments:\n"
            "      - {provider: mock, model: gpt-4o-mini}\n"
            "  gpt-4o-mini:\n",
        )
    )
    await asyncio.wait_for(changed.wait(), timeout=10)
    assert "watched" in live.current.models
