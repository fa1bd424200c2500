"""/dashboard over real sockets: the page is served whole from the gateway (nothing from
elsewhere, a strict CSP), and /dashboard/data answers the admin key with every team and a team's
key with that team only, with the same figures as the reports and the budget API."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import aiohttp
import pytest

from gateway.dashboard import ASSETS, asset
from gateway.providers.mock import MockUpstream
from tests.clock import T0, FakeClock
from tests.conftest import GatewayFactory
from tests.dashboard.conftest import Seed
from tests.dashboard.support import (
    ADMIN,
    TRAFFIC,
    add_history,
    admin_get,
    seeded_gateway,
    showback,
)


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    for name in ASSETS:
        text = asset(name).decode()
        # The SVG namespace is a name, not a fetch; anything else absolute would be.
        urls = set(re.findall(r"""(?:https?:)?//[\w.-]+\.\w+[^\s"'`)]*""", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text and "<script>" not in text  # no inline script: CSP


async def test_the_page_is_public_and_its_data_needs_a_key(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    async with aiohttp.ClientSession() as http:
        for path, kind in (("", "text/html"), ("/app.js", "text/javascript")):
            async with http.get(gw.url + "/dashboard" + path) as r:
                assert r.status == 200 and r.content_type == kind
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        for headers in ({}, {"Authorization": "Bearer sk-sg-not-a-key-0000000000"}):
            async with http.get(gw.url + "/dashboard/data", headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["error"]["type"] == "authentication_error"
        async with http.get(gw.url + "/dashboard/data?start=2026-11-09", headers=ADMIN) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "start"


async def test_the_admin_sees_every_team_with_the_reports_figures(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    async with aiohttp.ClientSession() as http:
        report = await showback(http, gw, sum(TRAFFIC.values()))
        async with http.get(gw.url + "/dashboard/data", headers=ADMIN) as r:
            assert r.status == 200
            doc = await r.json()
        async with http.get(gw.url + "/admin/budgets", headers=ADMIN) as r:
            budgets = {b["name"]: b for b in (await r.json())["data"]}
    assert (
        (doc["start"], doc["end"])
        == (report["start"], report["end"])
        == (
            "2026-11-01",
            "2026-11-05",
        )
    )
    assert doc["total"]["cost_usd"] == report["total"]["cost_usd"]
    assert doc["total"]["requests"] == sum(TRAFFIC.values())
    by_team = {t["team"]: t for t in doc["teams"]}
    for team in report["teams"]:
        shown = by_team[team["team"]]
        for figure in ("cost_usd", "list_cost_usd", "savings_usd", "requests"):
            assert shown[figure] == team[figure], (team["team"], figure)
        # Spend per day: everything fell on the clock's day, the 5th.
        assert shown["daily_usd"][-1] == team["cost_usd"]
        assert set(shown["daily_usd"][:-1]) == {"0.000000000"}
        # Its models, dearest first, with the report's figures.
        models = {m["model"]: m for m in shown["top_models"]}
        assert set(models) == set(team["models"])
        for name, usage in team["models"].items():
            assert models[name]["cost_usd"] == usage["cost_usd"]
        costs = [m["cost_usd"] for m in shown["top_models"]]
        assert costs == sorted(costs, key=float, reverse=True)
        # One key per team, the key id (never the secret).
        [key] = shown["top_keys"]
        assert re.fullmatch(r"key_[0-9a-f]{12}", key["key_id"])
        assert key["requests"] == TRAFFIC[team["team"]]
        for budget in shown["budgets"]:
            assert budget == budgets[budget["name"]]
    assert {b["name"] for t in doc["teams"] for b in t["budgets"]} == set(budgets)
    assert doc["total"]["daily_usd"][-1] == report["total"]["cost_usd"]


async def test_a_team_key_sees_its_own_team_only(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    async with aiohttp.ClientSession() as http:
        report = await showback(http, gw, sum(TRAFFIC.values()))
        headers = {"Authorization": f"Bearer {gw.keys['beta']}"}
        async with http.get(gw.url + "/dashboard/data", headers=headers) as r:
            assert r.status == 200
            doc = await r.json()
    [beta] = doc["teams"]
    assert beta["team"] == "beta"
    assert {b["team"] for b in beta["budgets"]} == {"beta"}
    expected = next(t for t in report["teams"] if t["team"] == "beta")
    assert doc["total"]["cost_usd"] == beta["cost_usd"] == expected["cost_usd"]
    assert doc["total"]["requests"] == TRAFFIC["beta"]


async def test_the_forecast_and_anomalies_are_their_reports(
    seed: Seed,
) -> None:
    """A period ending today carries the forecast report of the rest of the month and the
    anomalies report of the period (their causes worded as in the report's table); a team key
    gets its own team's; a past period gets no forecast, and only the anomalies still open."""
    gw = await seed(FakeClock(T0))
    await add_history(gw)
    beta = {"Authorization": f"Bearer {gw.keys['beta']}"}
    async with aiohttp.ClientSession() as http:
        doc = await admin_get(http, gw, "/dashboard/data")
        forecast = await admin_get(http, gw, "/admin/forecast?days=26")
        anomalies = await admin_get(http, gw, "/admin/anomalies?since=2026-11-01")
        table = await admin_get(http, gw, "/admin/anomalies?since=2026-11-01&format=csv")
        async with http.get(gw.url + "/dashboard/data", headers=beta) as r:
            team_doc = await r.json()
        async with http.get(
            gw.url + "/dashboard/data?start=2026-10-01&end=2026-10-31", headers=ADMIN
        ) as r:
            october = await r.json()
    assert doc["forecast"] == forecast
    assert doc["forecast"]["teams"][0]["daily"][-1]["date"] == "2026-11-30"
    [shown] = doc["anomalies"]
    cause_texts = shown.pop("cause_texts")
    assert [shown] == anomalies["data"]
    assert "; ".join(cause_texts) in table
    async with aiohttp.ClientSession() as http:
        card = await admin_get(http, gw, "/admin/reports/scorecard?period=2026-11&format=csv")
    assert doc["scorecard"] == {
        "period": "2026-11",
        "lines": list(csv.DictReader(io.StringIO(card))),
    }
    assert {line["team"] for line in team_doc["scorecard"]["lines"]} == {"beta"}
    async with aiohttp.ClientSession() as http:
        rows = await admin_get(http, gw, "/admin/reports/recommendations?format=csv")
        beta_rows = await admin_get(http, gw, "/admin/reports/recommendations?format=csv&team=beta")
    assert doc["recommendations"]["rows"] == list(csv.DictReader(io.StringIO(rows)))
    assert team_doc["recommendations"]["rows"] == list(csv.DictReader(io.StringIO(beta_rows)))
    assert {r["team"] for r in team_doc["recommendations"]["rows"]} <= {"beta"}
    assert [t["team"] for t in team_doc["forecast"]["teams"]] == ["beta"]
    assert team_doc["forecast"]["total"] is None and team_doc["anomalies"] == []
    # A past period: no forecast; the anomalies that started in it (none) and those open now.
    assert october["forecast"] is None
    assert [a["id"] for a in october["anomalies"]] == [shown["id"]]
