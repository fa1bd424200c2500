"""Teams read their own spend, finance reads every report, over real sockets: a team's client key
and its reader key read the team's usage and budgets (the admin reports' figures, to the nano)
and get a 403 for another team's; a reporting key reads every report and the dashboard and is
refused every change; the OpenAI SDK sees the errors it knows; no secret reaches a log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from gateway.providers.mock import MockUpstream
from tests.anomalies.support import ANOMALY_ID, plant_beside_detector
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory
from tests.dashboard.support import ADMIN, TRAFFIC, seeded_gateway, showback

REPORTING_KEY = "finance-reporting-key-0123456789"  # server.reporting_key, any string


@pytest.fixture
async def gw(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Gateway:
    monkeypatch.setenv("SPENDGATE_REPORTING_KEY", REPORTING_KEY)
    gw = await seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path)
    async with aiohttp.ClientSession() as http:
        await showback(http, gw, sum(TRAFFIC.values()))  # every request rolled up
    return gw


async def plant_anomaly(gw: Gateway) -> None:
    from gateway.app.state import REDIS

    await plant_beside_detector(gw.app[REDIS])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def get(gw: Gateway, path: str, key: str, status: int = 200) -> Any:
    async with aiohttp.ClientSession() as http, http.get(gw.url + path, headers=bearer(key)) as r:
        assert r.status == status, await r.text()
        return await r.json() if r.content_type == "application/json" else await r.text()


async def issue(gw: Gateway, **body: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/admin/keys", json=body, headers=ADMIN) as r,
    ):
        assert r.status == 201, await r.text()
        secret: str = (await r.json())["key"]
        return secret


def steady(usage: dict[str, Any]) -> dict[str, Any]:
    """A usage answer without the moments it was made at (the gateway's clock runs)."""
    forecast = usage["forecast"] and {**usage["forecast"], "as_of": None}
    return {**usage, "generated_at": None, "forecast": forecast}


def forbidden(error: Any, code: str) -> None:
    assert set(error) == {"error"}
    assert error["error"]["type"] == "permission_error"
    assert error["error"]["code"] == code


async def admin_view(gw: Gateway, team: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The team's showback entry and its budgets, as the admin API reports them."""
    report = await get(gw, "/admin/reports/showback", ADMIN_KEY)
    [entry] = [t for t in report["teams"] if t["team"] == team]
    budgets = await get(gw, f"/admin/budgets?team={team}", ADMIN_KEY)
    return entry, budgets["data"]


async def test_a_team_key_reads_its_own_spend_as_the_admin_reports_it(gw: Gateway) -> None:
    entry, budgets = await admin_view(gw, "beta")
    usage = await get(gw, "/v1/spendgate/usage", gw.keys["beta"])
    assert usage["object"] == "spendgate.usage" and usage["team"] == "beta"
    assert (usage["start"], usage["end"]) == ("2026-11-01", "2026-11-05")
    # Every showback figure of the team, its projects, tags and models, to the nano-dollar.
    for name, value in entry.items():
        assert usage[name] == value, name
    assert usage["requests"] == TRAFFIC["beta"] and usage["cost_usd"] != "0.000000000"
    assert usage["daily_usd"][-1] == entry["cost_usd"]
    assert set(usage["daily_usd"][:-1]) == {"0.000000000"}
    [key] = usage["keys"]
    assert key["requests"] == TRAFFIC["beta"] and key["cost_usd"] == entry["cost_usd"]
    assert usage["budgets"] == budgets and {b["team"] for b in budgets} == {"beta"}
    # The forecast's month so far is the same spend; too little history for a model yet.
    assert usage["forecast"]["month"]["to_date_usd"] == entry["cost_usd"]
    assert usage["forecast"]["month"]["period"] == "2026-11"
    assert usage["forecast"]["model"] is None
    assert usage["forecast"]["month"]["forecast_usd"] is None
    # Naming its own team changes nothing; the budgets endpoint answers the same budgets.
    again = await get(gw, "/v1/spendgate/usage?team=beta", gw.keys["beta"])
    assert steady(again) == steady(usage)
    quick = await get(gw, "/v1/spendgate/usage?forecast=false", gw.keys["beta"])
    assert quick["forecast"] is None
    assert steady(quick) == {**steady(usage), "forecast": None}
    error = await get(gw, "/v1/spendgate/usage?forecast=maybe", gw.keys["beta"], 400)
    assert error["error"]["param"] == "forecast"
    listed = await get(gw, "/v1/spendgate/budgets", gw.keys["beta"])
    assert listed == {"object": "list", "team": "beta", "data": budgets}
    # A period of days, as the showback report takes it.
    days = await get(gw, "/v1/spendgate/usage?start=2026-11-05&end=2026-11-05", gw.keys["beta"])
    assert days["cost_usd"] == entry["cost_usd"] and days["days"] == ["2026-11-05"]
    early = await get(gw, "/v1/spendgate/usage?start=2026-11-01&end=2026-11-04", gw.keys["beta"])
    assert early["cost_usd"] == "0.000000000" and early["keys"] == []


async def test_a_team_key_reads_its_own_scorecard(gw: Gateway) -> None:
    report = await get(gw, "/admin/reports/scorecard", ADMIN_KEY)
    for team in ("alpha", "beta"):
        [card] = [c for c in report["teams"] if c["team"] == team]
        mine = await get(gw, "/v1/spendgate/scorecard", gw.keys[team])
        assert mine["object"] == "spendgate.scorecard"
        assert {k: v for k, v in mine.items() if k in card} == card
        assert (mine["period"], mine["start"], mine["end"]) == (
            report["period"],
            report["start"],
            report["end"],
        )
        assert mine["cost_usd"] != "0.000000000"
    october = await get(gw, "/v1/spendgate/scorecard?period=2026-10", gw.keys["beta"])
    assert (october["period"], october["cost_usd"]) == ("2026-10", "0.000000000")
    error = await get(gw, "/v1/spendgate/scorecard?period=2026-13", gw.keys["beta"], 400)
    assert error["error"]["param"] == "period"


async def test_a_shared_team_has_no_scorecard(gw: Gateway) -> None:
    from gateway.app.state import LIVE_CONFIG

    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace("  gamma:\n", "  gamma:\n    shared: true\n"))
    assert gw.app[LIVE_CONFIG].reload() is True
    error = await get(gw, "/v1/spendgate/scorecard", gw.keys["gamma"], 404)
    assert error["error"]["code"] == "scorecard_not_found"
    assert (await get(gw, "/v1/spendgate/usage", gw.keys["gamma"]))["shared"] is True


async def test_another_teams_spend_is_forbidden(gw: Gateway) -> None:
    for path in (
        "/v1/spendgate/usage?team=alpha",
        "/v1/spendgate/budgets?team=alpha",
        "/v1/spendgate/scorecard?team=alpha",
    ):
        error = await get(gw, path, gw.keys["beta"], 403)
        forbidden(error, "team_forbidden")
        assert error["error"]["param"] == "team"
        assert "'beta'" in error["error"]["message"]
    # Nor a team that does not exist (no probing for team names).
    forbidden(
        await get(gw, "/v1/spendgate/usage?team=nope", gw.keys["beta"], 403), "team_forbidden"
    )
    for key in ("", "sk-sg-not-a-key-0000000000"):
        error = await get(gw, "/v1/spendgate/usage", key, 401)
        assert error["error"]["type"] == "authentication_error"
    error = await get(gw, "/v1/spendgate/usage?start=2026-11-01", gw.keys["beta"], 400)
    assert error["error"]["param"] == "start"
    error = await get(gw, "/v1/spendgate/budgets?tema=beta", gw.keys["beta"], 400)
    assert error["error"]["param"] == "tema"


async def test_the_openai_sdk_reads_usage_and_sees_a_permission_error(gw: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.keys["gamma"]) as client:
        usage = await client.get("/spendgate/usage", cast_to=object)
        assert isinstance(usage, dict) and usage["team"] == "gamma"
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.get(
                "/spendgate/usage", cast_to=object, options={"params": {"team": "beta"}}
            )
        assert caught.value.code == "team_forbidden"


async def test_a_reader_key_reads_its_team_and_sends_no_traffic(gw: Gateway) -> None:
    reader = await issue(gw, team="beta", role="reader", name="beta-finops")
    usage = await get(gw, "/v1/spendgate/usage", reader)
    client_view = await get(gw, "/v1/spendgate/usage", gw.keys["beta"])
    assert steady(usage) == steady(client_view)
    assert (await get(gw, "/v1/spendgate/budgets", reader))["team"] == "beta"
    forbidden(await get(gw, "/v1/spendgate/budgets?team=alpha", reader, 403), "team_forbidden")
    # The dashboard shows it its team only.
    doc = await get(gw, "/dashboard/data", reader)
    assert [t["team"] for t in doc["teams"]] == ["beta"]
    # It is no admin or reporting key, and it cannot spend.
    forbidden(await get(gw, "/admin/reports/showback", reader, 403), "read_only_key")
    client_key = gw.keys["beta"]
    forbidden(await get(gw, "/admin/reports/showback", client_key, 403), "reporting_key_required")
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=reader, max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.code == "read_only_key"
    after = await get(gw, "/v1/spendgate/usage", reader)
    assert after["requests"] == TRAFFIC["beta"]  # nothing was sent, nothing billed


@pytest.mark.parametrize("issued", [False, True], ids=["config", "issued"])
async def test_a_reporting_key_reads_every_report_as_the_admin_does(
    gw: Gateway, issued: bool
) -> None:
    key = await issue(gw, role="reporting", name="finance") if issued else REPORTING_KEY
    admin = ADMIN_KEY
    await plant_anomaly(gw)
    for path in (
        "/admin/reports/showback",
        "/admin/reports/showback?start=2026-11-01&end=2026-11-05&format=csv",
        "/admin/reports/chargeback",
        "/admin/reports/chargeback?format=table",
        "/admin/reports/focus",
        "/admin/reports/scorecard",
        "/admin/reports/tagging",
        "/admin/reports/review",
        "/admin/reports/maturity",
        "/admin/reports/recommendations",
        "/admin/forecast?days=3",
        "/admin/anomalies?since=2026-01-01",
        f"/admin/anomalies/{ANOMALY_ID}",
        "/admin/budgets",
    ):
        mine, admins = await get(gw, path, key), await get(gw, path, admin)
        if path.startswith("/admin/forecast"):  # made at the gateway's (running) clock
            mine, admins = {**mine, "as_of": None}, {**admins, "as_of": None}
        assert mine == admins, path
    # The dashboard of every team, and the team API for any team it names.
    doc = await get(gw, "/dashboard/data", key)
    assert sorted(t["team"] for t in doc["teams"]) == sorted(TRAFFIC)
    for team in TRAFFIC:
        usage = await get(gw, f"/v1/spendgate/usage?team={team}", key)
        assert usage["cost_usd"] == (await admin_view(gw, team))[0]["cost_usd"]
    error = await get(gw, "/v1/spendgate/usage", key, 400)
    assert error["error"]["param"] == "team"
    error = await get(gw, "/v1/spendgate/usage?team=nope", key, 404)
    assert error["error"]["code"] == "team_not_found"


@pytest.mark.parametrize("issued", [False, True], ids=["config", "issued"])
async def test_a_reporting_key_changes_nothing(gw: Gateway, issued: bool) -> None:
    key = await issue(gw, role="reporting") if issued else REPORTING_KEY
    admin = ADMIN_KEY
    await plant_anomaly(gw)
    keys_before = await get(gw, "/admin/keys", admin)
    budgets_before = await get(gw, "/admin/budgets", admin)
    [beta_key] = [k for k in keys_before["data"] if k["team"] == "beta"]
    budget = {"team": "beta", "period": "daily", "limit_usd": "5"}
    cost = {"id": "c1", "team": "beta", "amount_usd": "1", "description": "GPU hours"}
    async with aiohttp.ClientSession() as http:
        for method, path, body in (
            ("POST", "/admin/keys", {"team": "beta"}),
            ("POST", "/admin/keys", {"role": "reporting"}),
            ("DELETE", f"/admin/keys/{beta_key['key_id']}", None),
            ("POST", "/admin/budgets", {**budget, "name": "b1"}),
            ("PUT", "/admin/budgets/b1", budget),
            ("DELETE", "/admin/budgets/alpha-daily", None),
            ("POST", "/admin/costs", cost),
            ("POST", "/admin/import", {"events": []}),
            ("POST", f"/admin/anomalies/{ANOMALY_ID}/feedback", {"verdict": "expected"}),
            ("POST", "/admin/approvals/apr_000000000000/approve", {}),
            ("POST", "/admin/approvals/apr_000000000000/deny", {}),
            ("GET", "/admin/approvals", None),  # approvals are the admin's, reading included
            ("GET", "/admin/keys", None),  # key management is the admin's, reading included
        ):
            async with http.request(method, gw.url + path, json=body, headers=bearer(key)) as r:
                assert r.status == 403, (method, path, await r.text())
                forbidden(await r.json(), "read_only_key")
    assert await get(gw, "/admin/keys", admin) == keys_before
    assert await get(gw, "/admin/budgets", admin) == budgets_before
    anomaly = await get(gw, f"/admin/anomalies/{ANOMALY_ID}", admin)
    assert anomaly["feedback"] is None
    report = await get(gw, "/admin/reports/showback", admin)
    assert report["total"]["external_usd"] == "0.000000000"


async def test_no_secret_reaches_a_log_or_an_answer(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader = await issue(gw, team="alpha", role="reader")
    issued_reporting = await issue(gw, role="reporting")
    secrets = (reader, issued_reporting, REPORTING_KEY, gw.keys["alpha"])
    answers = [
        await get(gw, "/v1/spendgate/usage?team=beta", reader, 403),
        await get(gw, "/admin/keys", issued_reporting, 403),
        await get(gw, "/admin/keys", REPORTING_KEY, 403),
        await get(gw, "/v1/spendgate/usage", reader),
        await get(gw, "/admin/keys?include_revoked=true", ADMIN_KEY),
    ]
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(
            gw.base_url + "/chat/completions", json=body, headers=bearer(reader)
        ) as r:
            assert r.status == 403
            answers.append(await r.json())
    text = caplog.text + repr(answers)
    for secret in secrets:
        assert secret not in text
    # The key list shows the new keys' roles and ids, never a secret or a digest.
    listed = {k["role"] for k in answers[4]["data"]}
    assert listed == {"client", "reader", "reporting"}
