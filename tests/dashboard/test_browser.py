"""The dashboard in a real browser: headless Chromium (the system's, driven by Playwright) signs
in against a gateway with seeded spend, shows the reports' figures to the cent, shows a team key
only its team, updates without a reload, and leaves screenshots in var/test-artifacts/.

Skips, saying why, where Chromium or Playwright is missing; CI installs both and sets
SPENDGATE_REQUIRE_BROWSER=1, which turns the skip into a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.state import PIPELINE
from gateway.providers.mock import MockUpstream
from gateway.types import nano_to_usd_str, usd_to_nano
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory
from tests.dashboard.support import TRAFFIC, seeded_gateway, showback

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
# As the probe of this machine kind starts it: no sandbox as root, and none of the background
# connections that a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def cents(usd: str) -> str:
    """As the page shows money: rounded half up to the cent, with thousands separators."""
    nano = usd_to_nano(usd)
    sign, nano = ("-", -nano) if nano < 0 else ("", nano)
    whole, frac = divmod((nano + 5_000_000) // 10_000_000, 100)
    return f"{sign}${whole:,}.{frac:02d}"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = os.environ.get("SPENDGATE_CHROMIUM") or shutil.which("chromium")
    reason = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None and executable is None:
        reason = "no Chromium: apt-get install chromium, or set SPENDGATE_CHROMIUM"
    if reason is not None:
        if os.environ.get("SPENDGATE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test is required here but cannot run: {reason}")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def sign_in(browser: Any, gw: Gateway, key: str, name: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(gw.url + "/dashboard?refresh=1")
    await page.fill("#key", key)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert await page.is_hidden("#login")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{name}.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return page


async def shown(page: Any, figure: str, **attrs: str) -> str:
    selector = f'[data-figure="{figure}"]' + "".join(f'[data-{k}="{v}"]' for k, v in attrs.items())
    return str(await page.inner_text(selector)).strip()


async def test_the_admin_sees_the_reports_figures_to_the_cent(
    browser: Any,
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    page = await sign_in(browser, gw, ADMIN_KEY, "admin")
    async with aiohttp.ClientSession() as http:
        report = await showback(http, gw, sum(TRAFFIC.values()))
        async with http.get(
            gw.url + "/admin/budgets", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as r:
            budgets = (await r.json())["data"]
    assert await shown(page, "total-cost") == cents(report["total"]["cost_usd"])
    assert await shown(page, "total-savings") == cents(report["total"]["savings_usd"])
    assert await shown(page, "total-requests") == str(sum(TRAFFIC.values()))
    rows = await page.query_selector_all("#teams tbody tr")
    assert len(rows) == len(report["teams"])
    for team in report["teams"]:
        name = team["team"]
        assert await shown(page, "team-cost", team=name) == cents(team["cost_usd"])
        assert await shown(page, "team-list-cost", team=name) == cents(team["list_cost_usd"])
        assert await shown(page, "team-requests", team=name) == str(team["requests"])
    for budget in budgets:
        text = await shown(page, "budget-used", budget=budget["name"])
        if budget["limit_usd"] is not None:
            spent, limit = (nano_to_usd_str(budget[k]) for k in ("spent_nano", "limit_nano"))
            assert text.startswith(f"{cents(spent)} of {cents(limit)} (")
        else:
            assert text.startswith(f"{budget['spent_tokens']:,} of {budget['limit_tokens']:,}")
    # The chart is drawn: one line per team and one for all of them.
    assert len(await page.query_selector_all("#spend-chart polyline")) == len(TRAFFIC) + 1
    await page.close()


async def test_a_team_key_sees_its_team_and_the_page_updates_without_a_reload(
    browser: Any,
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    page = await sign_in(browser, gw, gw.keys["beta"], "team-beta")
    rows = await page.query_selector_all("#teams tbody tr")
    assert len(rows) == 1
    assert await shown(page, "team-requests", team="beta") == str(TRAFFIC["beta"])
    assert await page.query_selector('[data-team="alpha"]') is None
    # One more request: the page shows it at its next fetch, with no reload.
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "again"}]}
        headers = {"Authorization": f"Bearer {gw.keys['beta']}"}
        async with http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
        await gw.app[PIPELINE].accountant.drain()
        await showback(http, gw, sum(TRAFFIC.values()) + 1)
    await page.wait_for_function(
        """n => document.querySelector('[data-figure="team-requests"][data-team="beta"]')
            .textContent === String(n)""",
        arg=TRAFFIC["beta"] + 1,
        timeout=10_000,
    )
    await page.click("#signout")
    assert await page.is_visible("#login")
    await page.close()
