"""The dashboard in a real browser: headless Chromium (the system's, driven by Playwright) signs
in against a gateway with seeded spend, shows the reports' figures to the cent, shows a team key
only its team, updates without a reload, and leaves screenshots in var/test-artifacts/.

Skips, saying why, where Chromium or Playwright is missing; CI installs both and sets
SPENDGATE_REQUIRE_BROWSER=1, which turns the skip into a failure."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.state import PIPELINE
from gateway.types import nano_to_usd_str, usd_to_nano
from tests.clock import T0, FakeClock
from tests.conftest import ADMIN_KEY, Gateway
from tests.dashboard.conftest import Seed
from tests.dashboard.support import TRAFFIC, add_history, admin_get, showback

DASH = " \N{EN DASH} "  # between the ends of a range; alone (no spaces) for "none"
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
    errors: list[str] = []  # the script's uncaught exceptions: none is allowed
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(gw.url + "/dashboard?refresh=1")
    await page.fill("#key", key)
    await page.click("#login-form button[type=submit]")
    try:
        await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    finally:
        assert errors == []
    assert await page.is_hidden("#login")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{name}.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return page


def with_cents(text: str) -> str:
    """A report's text as the page shows it: each exact amount (nine decimals) to the cent."""
    return re.sub(r"-?\d+\.\d{9}", lambda m: cents(m[0]), text)


async def shown(page: Any, figure: str, **attrs: str) -> str:
    selector = f'[data-figure="{figure}"]' + "".join(f'[data-{k}="{v}"]' for k, v in attrs.items())
    return str(await page.inner_text(selector)).strip()


async def test_the_admin_sees_the_reports_figures_to_the_cent(browser: Any, seed: Seed) -> None:
    gw = await seed()
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
    # Printable: the print style sheet hides the controls and keeps every section.
    await page.emulate_media(media="print")
    assert await page.is_hidden("#signout") and await page.is_visible("#board")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-print.png"), full_page=True)
    await page.emulate_media(media="screen")
    # The chart is drawn: one line per team and one for all of them.
    assert len(await page.query_selector_all("#spend-chart polyline.actual")) == len(TRAFFIC) + 1
    # No history yet: no model, and the page says why instead of inventing a forecast.
    assert await shown(page, "month-forecast") == DASH.strip()
    assert await shown(page, "team-month-forecast", team="alpha") == "needs 7+ days of history"
    assert await shown(page, "anomalies-open") == "0 open"
    await page.close()


async def test_the_forecast_and_the_anomalies_equal_their_reports_to_the_cent(
    browser: Any, seed: Seed
) -> None:
    # A clock standing still at T0: a forecast of the rest of today moves with the time of day.
    gw = await seed(FakeClock(T0))
    await add_history(gw)
    page = await sign_in(browser, gw, ADMIN_KEY, "admin-forecast-anomalies")
    async with aiohttp.ClientSession() as http:
        # From today (the 5th) to November's last day, as the page asks for it.
        forecast = await admin_get(http, gw, "/admin/forecast?days=26")
        anomalies = (await admin_get(http, gw, "/admin/anomalies?since=2026-11-01"))["data"]
        causes_csv = await admin_get(http, gw, "/admin/anomalies?since=2026-11-01&format=csv")
    for team in [*forecast["teams"], forecast["total"]]:
        month = team["month"]
        assert team["model"] is not None, team["team"]
        assert await shown(page, "team-month-to-date", team=team["team"]) == cents(
            month["to_date_usd"]
        )
        assert await shown(page, "team-month-forecast", team=team["team"]) == cents(
            month["forecast_usd"]
        )
        assert await shown(page, "team-month-range80", team=team["team"]) == (
            f"{cents(month['low80_usd'])}{DASH}{cents(month['high80_usd'])}"
        )
    total = forecast["total"]["month"]
    assert await shown(page, "month-forecast") == cents(total["forecast_usd"])
    assert await shown(page, "month-forecast-range") == (
        f"80 %: {cents(total['low80_usd'])}{DASH}{cents(total['high80_usd'])}"
    )
    # The chart: the teams' lines, the total's forecast to the month's end, in its two bands.
    assert len(await page.query_selector_all("#spend-chart polyline.actual")) == len(TRAFFIC) + 1
    assert len(await page.query_selector_all("#spend-chart polyline.forecast")) == 1
    assert len(await page.query_selector_all("#spend-chart polygon.band")) == 2
    # Every budget with a forecast says where it ends up, as the report does.
    for team in forecast["teams"]:
        for budget in team["budgets"]:
            [limit, *_] = budget["limits"]
            if limit["unit"] == "usd" and limit["period_end_forecast_usd"] is not None:
                text = await shown(page, "budget-forecast", budget=budget["name"])
                assert text.startswith(
                    f"forecast at the period's end {cents(limit['period_end_forecast_usd'])} "
                ), text
    # The planted anomaly, with the report's numbers and its causes as the report words them.
    [anomaly] = anomalies
    assert anomaly["team"] == "alpha" and anomaly["status"] == "escalated"
    assert await shown(page, "anomalies-open") == "1 open"
    for figure in ("actual", "expected", "excess"):
        assert await shown(page, f"anomaly-{figure}", anomaly=anomaly["id"]) == cents(
            anomaly[f"{figure}_usd"]
        )
    causes = await page.query_selector_all(
        f'[data-figure="anomaly-causes"][data-anomaly="{anomaly["id"]}"] li'
    )
    texts = [str(await c.inner_text()).strip() for c in causes]
    [row] = list(csv.DictReader(io.StringIO(causes_csv)))
    assert "; ".join(texts) == row["causes"] and len(texts) == len(anomaly["causes"]) == 2
    assert texts[0].startswith("key key_0000000000aa +$118.00")
    # The scorecard: every line of every team, its value as the report's (amounts to the cent).
    async with aiohttp.ClientSession() as http:
        card = await admin_get(http, gw, "/admin/reports/scorecard?period=2026-11&format=csv")
    lines = list(csv.DictReader(io.StringIO(card)))
    assert {line["team"] for line in lines} == set(TRAFFIC)
    shown_values = await page.query_selector_all('[data-figure="scorecard-value"]')
    assert len(shown_values) == len(lines)
    for line in lines:
        text = await shown(page, "scorecard-value", team=line["team"], line=line["line"])
        assert text == with_cents(line["value"]), line
    # The recommendations of the last 30 days, dearest first, each saving to the cent.
    async with aiohttp.ClientSession() as http:
        recommended = await admin_get(http, gw, "/admin/reports/recommendations")
    assert recommended["data"], "the seeded spend has no budgetless team? nothing to compare"
    assert await shown(page, "recommendations-total") == cents(recommended["monthly_saving_usd"])
    for i, row in enumerate(recommended["data"]):
        saving = await shown(page, "recommendation-saving", row=str(i))
        assert saving == cents(row["monthly_saving_usd"]), row
    await page.close()


async def test_a_team_key_sees_its_team_and_the_page_updates_without_a_reload(
    browser: Any, seed: Seed
) -> None:
    gw = await seed()
    await add_history(gw)  # alpha's anomaly and every team's forecast: beta sees its own only
    page = await sign_in(browser, gw, gw.keys["beta"], "team-beta")
    rows = await page.query_selector_all("#teams tbody tr")
    assert len(rows) == 1
    async with aiohttp.ClientSession() as http:
        before = await admin_get(http, gw, "/admin/reports/showback")
    requests = next(t["requests"] for t in before["teams"] if t["team"] == "beta")
    assert await shown(page, "team-requests", team="beta") == str(requests)
    assert await page.query_selector('[data-team="alpha"]') is None
    # Its forecast row only (no total of every team), and no other team's anomaly.
    forecast_rows = await page.query_selector_all('[data-figure="team-month-forecast"]')
    assert [await r.get_attribute("data-team") for r in forecast_rows] == ["beta"]
    assert await page.query_selector("[data-anomaly]") is None
    scorecard = await page.query_selector_all('[data-figure="scorecard-value"]')
    assert scorecard and {await v.get_attribute("data-team") for v in scorecard} == {"beta"}
    # One more request: the page shows it at its next fetch, with no reload.
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "again"}]}
        headers = {"Authorization": f"Bearer {gw.keys['beta']}"}
        async with http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
        await gw.app[PIPELINE].accountant.drain()
        await showback(http, gw, before["total"]["requests"] + 1)
    await page.wait_for_function(
        """n => document.querySelector('[data-figure="team-requests"][data-team="beta"]')
            .textContent === String(n)""",
        arg=requests + 1,
        timeout=10_000,
    )
    await page.click("#signout")
    assert await page.is_visible("#login")
    await page.close()
