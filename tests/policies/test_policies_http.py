"""Each policy through the HTTP API, as the OpenAI SDK sees it: a blocked model and a request
missing required tags raise PermissionDeniedError with code `policy_violation`; a request over
an approval limit raises it with `approval_required` and the approval's id, and proceeds once
an admin approves; a warning rides on the response; every decision is counted and logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "hello"}]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory("policies.yaml")


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as c:
        yield c


async def chat(client: openai.AsyncOpenAI, model: str, **kwargs: Any) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs
    )


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    return body


async def test_a_blocked_model_is_refused_in_its_scope(
    client: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    dev = {"x-sg-env": "dev", "x-sg-workload": "tests"}
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(client, "o3-mini", extra_headers=dev)
    assert info.value.status_code == 403 and info.value.code == "policy_violation"
    assert error_of(info.value)["message"] == (
        "policy 'no-reasoning-in-dev' blocks model 'o3-mini' for environment dev: "
        "use gpt-4o-mini in dev"
    )
    # A tier that routes a dev request to a blocked model is refused too, and says so.
    with pytest.raises(openai.PermissionDeniedError, match="where tier 'auto' routed it"):
        await chat(client, "auto", extra_headers={**dev, "x-sg-tier": "premium"})
    ok = await chat(client, "auto", extra_headers=dev)  # the tier's default is allowed
    assert ok.headers["x-sg-model"] == "gpt-4o-mini"
    staging = await chat(client, "o3-mini", extra_headers={"x-sg-env": "staging"})
    assert staging.status_code == 200
    assert (
        gateway.metric("sg_policy_decisions_total", policy="no-reasoning-in-dev", action="block")
        == 2
    )


async def test_missing_tags_warn_or_block(client: openai.AsyncOpenAI, gateway: Gateway) -> None:
    warned = await chat(client, "gpt-4o-mini")
    assert warned.status_code == 200
    assert warned.headers["x-sg-policy-warning"] == "workload-named: missing workload"
    tagged = await chat(client, "gpt-4o-mini", extra_headers={"x-sg-workload": "search"})
    assert "x-sg-policy-warning" not in tagged.headers
    assert gateway.metric("sg_policy_decisions_total", policy="workload-named", action="warn") == 1
    prod = {"x-sg-env": "prod", "x-sg-workload": "search"}
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(client, "gpt-4o-mini", extra_headers=prod)
    assert info.value.code == "policy_violation"
    assert "policy 'prod-cost-center' requires cost-center" in error_of(info.value)["message"]
    fine = await chat(client, "gpt-4o-mini", extra_headers={**prod, "x-sg-tags": "cost-center=c1"})
    assert fine.status_code == 200
    # A stream carries the warning in its headers too.
    stream = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert stream.headers["x-sg-policy-warning"] == "workload-named: missing workload"
    async for _ in stream.parse():
        pass


async def approve(gateway: Gateway, approval_id: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        url = f"{gateway.url}/admin/approvals/{approval_id}/approve"
        async with http.post(url, json=body) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())


async def test_a_request_over_a_limit_waits_for_an_approval(
    client: openai.AsyncOpenAI, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spendgate.access")
    big = {"n": 5, "extra_headers": {"x-sg-workload": "batch"}}
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(client, "gpt-4o-mini", **big)
    first = info.value
    assert first.code == "approval_required"
    approval_id = error_of(first)["approval_id"]
    assert first.response.headers["x-sg-approval-id"] == approval_id
    assert "policy 'big-requests' requires an admin's approval: n 5 is over 4" in first.message
    with pytest.raises(openai.PermissionDeniedError) as again:  # asks again: the same approval
        await chat(client, "gpt-4o-mini", **big)
    assert error_of(again.value)["approval_id"] == approval_id
    small = await chat(client, "gpt-4o-mini", n=2)  # within the limits: no approval needed
    assert small.status_code == 200

    async with (
        aiohttp.ClientSession(headers=ADMIN) as http,
        http.get(f"{gateway.url}/admin/approvals?status=pending") as response,
    ):
        (listed,) = (await response.json())["data"]
    assert listed["id"] == approval_id and listed["asks"] == 2
    assert listed["model"] == "gpt-4o-mini" and listed["team"] == "alpha"
    assert listed["reason"] == "n 5 is over 4" and float(listed["estimated_cost_usd"]) > 0

    decided = await approve(gateway, approval_id, {"requests": 2, "by": "finops"})
    assert decided["status"] == "approved" and decided["decided_by"] == "finops"
    for _ in range(2):
        served = await chat(client, "gpt-4o-mini", **big)
        assert served.status_code == 200 and len(served.parse().choices) == 5
    # Another key of the team is not covered, nor another model.
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["beta"], max_retries=0
    ) as beta:
        with pytest.raises(openai.PermissionDeniedError, match="approval"):
            await chat(beta, "gpt-4o-mini", **big)
    with pytest.raises(openai.PermissionDeniedError) as used_up:
        await chat(client, "gpt-4o-mini", **big)
    assert error_of(used_up.value)["approval_id"] != approval_id
    assert (
        gateway.metric("sg_policy_decisions_total", policy="big-requests", action="approved") == 2
    )
    assert (
        gateway.metric(
            "sg_policy_decisions_total", policy="big-requests", action="approval_required"
        )
        == 4
    )
    lines = [r.access for r in caplog.records if hasattr(r, "access")]  # type: ignore[attr-defined]
    decided_lines = [(line["status"], line["policy"], line["approval_id"]) for line in lines]
    assert (403, "big-requests=approval_required", approval_id) in decided_lines
    assert (200, "big-requests=approved", approval_id) in decided_lines


async def test_a_denied_approval_says_so(client: openai.AsyncOpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(client, "gpt-4o-mini", max_tokens=6000)
    assert "max_tokens 6000 is over 5000" in info.value.message
    approval_id = error_of(info.value)["approval_id"]
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        url = f"{gateway.url}/admin/approvals/{approval_id}/deny"
        async with http.post(url, json={"note": "use the batch API"}) as response:
            assert (await response.json())["status"] == "denied"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await chat(client, "gpt-4o-mini", max_tokens=6000)
    assert denied.value.code == "approval_denied"
    assert error_of(denied.value)["approval_id"] == approval_id
