"""/healthz and /readyz as a load balancer sees them, the store up, down or hung."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayFactory


async def get(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_a_gateway_whose_store_answers_is_live_and_ready(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(teams=())
    assert await get(gw.url + "/healthz") == (200, {"status": "ok"})
    assert await get(gw.url + "/readyz") == (200, {"status": "ready"})


@pytest.mark.parametrize(
    ("policy", "ready"),
    [
        # It serves through the outage (spooling spend): stay in the load balancer, degraded.
        ("open", (200, {"status": "degraded", "store": "TimeoutError"})),
        # It refuses requests with 503 while the store is away: out of the load balancer.
        ("closed", (503, {"status": "unavailable", "store": "TimeoutError"})),
    ],
)
async def test_a_hung_store_degrades_readiness_as_on_unavailable_says(
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    silent_port: int,
    policy: str,
    ready: tuple[int, dict[str, str]],
) -> None:
    monkeypatch.setenv("SPENDGATE_STORE_URL", f"redis://127.0.0.1:{silent_port}/0")
    monkeypatch.setenv("SPENDGATE_ON_UNAVAILABLE", policy)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    gw = await gateway_factory("budgets.yaml", teams=())
    assert await get(gw.url + "/readyz") == ready
    assert await get(gw.url + "/healthz") == (200, {"status": "ok"})
