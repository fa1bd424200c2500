"""Budgets enforced through the gateway, against a real Redis: under concurrency no budget is
overspent (one gateway and two gateway processes sharing Redis), a downgrade budget switches the
model, refusals are OpenAI-shaped 429s, and every served request lands in the spend stream."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway import accounting, rediskeys
from gateway.app.state import LEDGER, PIPELINE
from gateway.config.model import Deployment, ModelRoute
from gateway.pricing.price import Price
from gateway.pricing.tokens import count_chat_prompt
from gateway.providers.mock import MockUpstream
from gateway.stages import budgets, routing, tiers
from gateway.types import SpendEvent, usd_to_nano
from tests.conftest import Gateway, GatewayFactory

MESSAGES = [{"role": "user", "content": "Summarise the budget report"}]
MAX_TOKENS = 10


def gpt4o_worst_case_nano(max_tokens: int = MAX_TOKENS) -> int:
    """What one request reserves: its prompt (tiktoken) plus `max_tokens` output at gpt-4o's
    list price ($2.50 in / $10 out per 1M tokens), rounded up to a whole nano-dollar."""
    prompt = count_chat_prompt(MESSAGES, "gpt-4o")
    per_m = prompt * 2_500_000_000 + max_tokens * 10_000_000_000
    return -(-per_m // 1_000_000)


def test_the_worst_case_bills_every_token_at_the_dearest_price_of_the_dearest_deployment() -> None:
    # One deployment's cached input and another's reasoning tokens are dearer than their plain
    # prices (an override can say so): the worst case takes each, per deployment.
    cached = Price(
        input_per_m=1_000, output_per_m=4_000, cached_input_per_m=3_000, reasoning_per_m=0
    )
    reasoning = Price(
        input_per_m=2_000, output_per_m=1_000, cached_input_per_m=0, reasoning_per_m=5_000
    )
    route = ModelRoute(
        name="m",
        deployments=(
            Deployment("a/m", "a", "m", 1, cached),
            Deployment("b/m", "b", "m", 1, reasoning),
        ),
    )
    body = {"max_tokens": 100, "n": 2}
    # a: 1000 x 3000 + 200 x 4000 = 3.8e6 per 1M; b: 1000 x 2000 + 200 x 5000 = 3.0e6.
    assert accounting.worst_case(route, body, 1000, "chat/completions") == (4, 1200)
    assert accounting.worst_case(route, body, 1001, "chat/completions") == (4, 1201)  # rounds up
    # An embedding has no output: its prompt alone, at the dearest input price.
    assert accounting.worst_case(route, body, 1_000_000, "embeddings") == (3_000, 1_000_000)


@pytest.fixture
async def store_url(
    real_redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    url = real_redis_url.rsplit("/", 1)[0] + "/5"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    monkeypatch.setenv("SPENDGATE_STORE_URL", url)
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    yield url


async def post_chat(
    http: aiohttp.ClientSession,
    url: str,
    key: str,
    model: str = "gpt-4o",
    max_tokens: int = MAX_TOKENS,
) -> tuple[int, dict[str, str], dict[str, object]]:
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens}
    async with http.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        return response.status, dict(response.headers), await response.json()


def request_id(headers: dict[str, str]) -> str:
    return next(v for k, v in headers.items() if k.lower() == "x-request-id")


async def stream_events(url: str, team: str) -> list[SpendEvent]:
    redis = Redis.from_url(url)
    try:
        entries = await redis.xrange(rediskeys.events_stream(team))
    finally:
        await redis.aclose()
    return [SpendEvent.from_fields(fields) for _, fields in entries]


async def spent_nano(gateway: Gateway, team: str) -> int:
    registry = gateway.app[PIPELINE].accountant.registry
    budgets = registry.all(team)
    statuses = await gateway.app[LEDGER].budget_status(team, budgets)
    assert all(s.reserved_nano == 0 for s in statuses), "reservations left behind"
    return statuses[0].spent_nano


@pytest.mark.parametrize("k", [1, 7, 40])
async def test_concurrent_requests_never_overspend(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    k: int,
) -> None:
    output = 400  # the mock writes them all: an answer costs within 0.4 % of its worst case
    mock_upstream.options.completion_tokens = output
    worst = gpt4o_worst_case_nano(output)
    limit = k * worst + worst // 2  # room for exactly k worst cases
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{limit / 1e9:.9f}")
    # Every request is in flight when the others reserve; and a settle that lands before a
    # late one reserves frees far less than a worst case.
    mock_upstream.options.latency_s = 0.5
    gateway = await gateway_factory("budgets.yaml", teams=("alpha",))
    key = gateway.keys["alpha"]
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(post_chat(http, gateway.url, key, max_tokens=output) for _ in range(300))
        )
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == k
    assert statuses.count(429) == 300 - k
    refusal = next(body for status, _, body in results if status == 429)
    assert refusal["error"]["code"] == "budget_exceeded"  # type: ignore[index]
    assert "alpha-daily" in refusal["error"]["message"]  # type: ignore[index]
    retry_after = next(h for s, h, _ in results if s == 429)["Retry-After"]
    assert 0 < int(retry_after) <= 86400
    refused = gateway.metric("sg_budget_refusals_total", team="alpha", budget="alpha-daily")
    assert refused == gateway.metric("sg_budget_refusals_total", action="block") == 300 - k
    await gateway.app[PIPELINE].accountant.drain()
    # Counted for the scorecard too, in the month of the gateway's clock.
    ledger = gateway.app[LEDGER]
    month = ledger.now().strftime("%Y-%m")
    assert await ledger.refusals("alpha", month) == {("alpha-daily", "block"): 300 - k}
    spent = await spent_nano(gateway, "alpha")
    assert 0 < spent <= limit
    served = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert len(served) == k
    assert sum(e.cost_nano for e in served) == spent


async def test_the_remaining_budget_is_in_every_response(
    gateway_factory: GatewayFactory,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "1")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    async with aiohttp.ClientSession() as http:
        status, headers, _ = await post_chat(http, gw.url, gw.keys["alpha"])
    assert status == 200
    # $1 minus what this request cost: its worst case, held until the settle, is not counted.
    expected = 1_000_000_000 - usd_to_nano(headers["x-sg-cost-usd"])
    assert usd_to_nano(headers["x-sg-budget-remaining-usd"]) == expected
    assert usd_to_nano(headers["x-sg-cost-usd"]) < gpt4o_worst_case_nano()


async def test_a_stream_shows_the_worst_case_first_and_what_is_left_at_its_end(
    gateway_factory: GatewayFactory, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "1")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": MAX_TOKENS, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gw.keys['alpha']}"},
        ) as response,
    ):
        assert response.status == 200
        # The headers go before the usage is known: the least that can be left.
        at_worst = usd_to_nano(response.headers["x-sg-budget-remaining-usd"])
        text = await response.text()
    comments = dict(
        line[2:].split("=", 1) for line in text.splitlines() if line.startswith(": x-sg-")
    )
    cost = usd_to_nano(comments["x-sg-cost-usd"])
    assert at_worst == 1_000_000_000 - gpt4o_worst_case_nano()
    assert usd_to_nano(comments["x-sg-budget-remaining-usd"]) == 1_000_000_000 - cost > at_worst


@pytest.mark.parametrize("fraction", ["0", "0.5"])
async def test_cache_hits_say_what_is_left_and_a_full_block_budget_refuses_a_priced_one(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fraction: str,
) -> None:
    from tests.conftest import FIXTURES

    output = 400  # the mock writes them all: an answer costs within 0.4 % of its worst case
    mock_upstream.options.completion_tokens = output
    worst = gpt4o_worst_case_nano(output)
    limit = worst + worst // 4  # room for the miss, not for a hit at half its price
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{limit / 1e9:.9f}")
    config = tmp_path / "budgets-cache.yaml"
    config.write_text(
        (FIXTURES / "budgets.yaml")
        .read_text()
        .replace(
            "teams:\n",
            f"cache:\n  hit_cost_fraction: {fraction}\n  routes:\n    gpt-4o: {{mode: always}}\n"
            "teams:\n",
            1,
        )
    )
    gw = await gateway_factory(str(config), teams=("alpha",))
    key = gw.keys["alpha"]
    async with aiohttp.ClientSession() as http:
        status, miss, _ = await post_chat(http, gw.url, key, max_tokens=output)
        assert status == 200 and miss["x-sg-cache"] == "miss"
        await gw.app[PIPELINE].accountant.drain()
        status, hit, answer = await post_chat(http, gw.url, key, max_tokens=output)
    left = limit - usd_to_nano(miss["x-sg-cost-usd"])
    if fraction == "0":  # a free hit is served, and says what is left
        assert status == 200 and hit["x-sg-cache"] == "hit"
        assert usd_to_nano(hit["x-sg-budget-remaining-usd"]) == left
    else:  # half the miss's price does not fit in what is left: refused like any request
        assert status == 429, answer
        assert answer["error"]["code"] == "budget_exceeded"  # type: ignore[index]
    await gw.app[PIPELINE].accountant.drain()
    assert await spent_nano(gw, "alpha") == limit - left


async def test_far_from_the_limit_requests_reserve_in_a_lease(
    gateway_factory: GatewayFactory, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "1000")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    key = gw.keys["alpha"]
    async with aiohttp.ClientSession() as http:
        status, _, _ = await post_chat(http, gw.url, key)  # reserved in Redis: shows the room
        assert status == 200
        results = await asyncio.gather(*(post_chat(http, gw.url, key) for _ in range(100)))
        redis = Redis.from_url(store_url)
        try:
            held = await redis.zrange(rediskeys.reservation_deadlines("alpha"), 0, -1)
        finally:
            await redis.aclose()
    assert [s for s, _, _ in results] == [200] * 100
    assert any(member.startswith(b"lease.") for member in held)
    # What each response says is left never overstates it, nor drops below 101 worst cases.
    limit, worst = 1000 * 10**9, gpt4o_worst_case_nano()
    remaining = [usd_to_nano(h["x-sg-budget-remaining-usd"]) for _, h, _ in results]
    assert all(limit - 101 * worst <= r < limit for r in remaining)
    await gw.app[PIPELINE].accountant.drain()
    await gw.app[LEDGER].close_leases()
    served = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert len(served) == 101
    assert await spent_nano(gw, "alpha") == sum(e.cost_nano for e in served)  # nothing held


def count_prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The endpoints of the prompts the request path's stages tokenize from now on."""
    counted: list[str] = []
    count = budgets.count_prompt

    def counting(body: dict[str, Any], endpoint: str, model: str) -> int:
        counted.append(endpoint)
        return count(body, endpoint, model)

    for stage in (tiers, routing, budgets):
        monkeypatch.setattr(stage, "count_prompt", counting)
    return counted


async def test_a_lease_holds_the_body_size_bound_instead_of_tokenizing(
    gateway_factory: GatewayFactory, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = count_prompts(monkeypatch)
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "1000")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    key = gw.keys["alpha"]
    async with aiohttp.ClientSession() as http:
        await post_chat(http, gw.url, key)  # no lease yet: counted, reserved in Redis
        assert counted == ["chat/completions"]
        await post_chat(http, gw.url, key)  # this one takes a lease out
        results = await asyncio.gather(*(post_chat(http, gw.url, key) for _ in range(49)))
    assert [s for s, _, _ in results] == [200] * 49
    assert counted == ["chat/completions"] * 2
    await gw.app[PIPELINE].accountant.drain()
    await gw.app[LEDGER].close_leases()
    served = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert len(served) == 51
    assert await spent_nano(gw, "alpha") == sum(e.cost_nano for e in served)  # nothing held


async def test_near_the_limit_every_prompt_is_counted_exactly(
    gateway_factory: GatewayFactory, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = count_prompts(monkeypatch)
    worst = gpt4o_worst_case_nano()  # the body-size bound would make it 3x as much
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{(3 * worst + worst // 2) / 1e9:.9f}")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(post_chat(http, gw.url, gw.keys["alpha"]) for _ in range(20))
        )
    assert [s for s, _, _ in results].count(200) == 3
    assert counted == ["chat/completions"] * 20


async def counting_settles(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Gateway, list[int]]:
    """A gateway for team alpha (far from its budget) and the sizes of its settle batches."""
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "1000")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    ledger = gw.app[LEDGER]
    batches: list[int] = []
    settle_many = ledger.settle_many

    async def counted(items: list[Any]) -> list[Any]:
        batches.append(len(items))
        return await settle_many(items)

    monkeypatch.setattr(ledger, "settle_many", counted)
    return gw, batches


async def test_one_client_s_requests_settle_together(
    gateway_factory: GatewayFactory, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending request after request: each settle waits for the next request to begin
    and finish (up to IDLE_WINDOW_S) instead of a round trip per request."""
    monkeypatch.setattr(accounting, "IDLE_WINDOW_S", 3600.0)  # only company ends the wait
    gw, batches = await counting_settles(gateway_factory, monkeypatch)
    accountant = gw.app[PIPELINE].accountant
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            assert (await post_chat(http, gw.url, gw.keys["alpha"]))[0] == 200
    async with asyncio.timeout(5):
        await accountant.drain()
    assert batches == [2]
    assert len([e for e in await stream_events(store_url, "alpha") if e.status == 200]) == 2


async def test_a_request_is_booked_while_the_next_one_waits_on_its_upstream(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished request's metrics, access line and spend events wait for the next request's
    upstream call (not the gap before it), and reading the metrics books what is pending."""
    monkeypatch.setattr(accounting, "BOOK_WITHIN_S", 3600.0)  # only a lull or a reader books
    caplog.set_level(logging.INFO, logger="spendgate.access")
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    key = gw.keys["alpha"]

    def booked() -> list[str]:
        lines = [getattr(r, "access", {}) for r in caplog.records if r.name == "spendgate.access"]
        return [line["request_id"] for line in lines]

    async with aiohttp.ClientSession() as http:
        status, headers, _ = await post_chat(http, gw.url, key)
        assert status == 200
        first = request_id(headers)
        assert booked() == []  # answered, not booked yet
        mock_upstream.options.latency_s = 0.3
        second = asyncio.create_task(post_chat(http, gw.url, key))
        async with asyncio.timeout(5):
            while len(mock_upstream.requests) < 2:
                await asyncio.sleep(0.01)
        assert booked() == [first]  # in the second's wait on the upstream
        assert not second.done()
        status, headers, _ = await second
        assert status == 200
    assert booked() == [first]
    assert gw.metric("sg_requests_total", team="alpha", status="200") == 2  # a read books
    assert booked() == [first, request_id(headers)]
    async with asyncio.timeout(5):
        await gw.app[PIPELINE].accountant.drain()
    assert len([e for e in await stream_events(store_url, "alpha") if e.status == 200]) == 2


async def test_settles_wait_for_requests_in_progress_and_go_when_none_is_left(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accounting, "SETTLE_WINDOW_S", 3600.0)  # only company ends a wait
    gw, batches = await counting_settles(gateway_factory, monkeypatch)
    accountant = gw.app[PIPELINE].accountant
    key = gw.keys["alpha"]
    async with aiohttp.ClientSession() as http:
        assert (await post_chat(http, gw.url, key))[0] == 200
        async with asyncio.timeout(5):  # alone: settled after the idle window, not this one
            await accountant.drain()
        assert batches == [1]
        mock_upstream.options.latency_s = 1.0
        slow = asyncio.create_task(post_chat(http, gw.url, key))
        async with asyncio.timeout(5):
            while len(mock_upstream.requests) < 2:
                await asyncio.sleep(0.01)
        mock_upstream.options.latency_s = 0.0
        assert (await post_chat(http, gw.url, key))[0] == 200  # done while `slow` is not
        assert (await slow)[0] == 200
    async with asyncio.timeout(5):
        await accountant.drain()
    assert batches == [1, 2]  # the second waited for the slow one, then both went together
    served = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert len(served) == 3


async def test_a_downgrade_budget_switches_to_the_cheaper_model(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worst = gpt4o_worst_case_nano()
    monkeypatch.setenv("SPENDGATE_BETA_LIMIT_USD", f"{(worst * 3 // 2) / 1e9:.9f}")
    gw = await gateway_factory("budgets.yaml", teams=("beta",))
    async with aiohttp.ClientSession() as http:
        first = await post_chat(http, gw.url, gw.keys["beta"])
        await gw.app[PIPELINE].accountant.drain()
        later = [await post_chat(http, gw.url, gw.keys["beta"]) for _ in range(3)]
    assert first[0] == 200 and first[1]["x-sg-model"] == "gpt-4o"
    for status, headers, _ in later:
        assert status == 200
        assert headers["x-sg-model"] == "gpt-4o-mini"
        assert headers["x-sg-route"] == "budget=beta-daily; downgrade; model=gpt-4o-mini"
    assert [r.model for r in mock_upstream.requests] == ["gpt-4o"] + ["gpt-4o-mini"] * 3
    await gw.app[PIPELINE].accountant.drain()
    events = await stream_events(store_url, "beta")
    assert [e.served_model for e in events] == ["gpt-4o"] + ["gpt-4o-mini"] * 3
    # The downgraded calls record what they saved against the requested model's list price.
    assert all(e.list_cost_nano > e.cost_nano for e in events[1:])
    assert [e.optimization for e in events] == [None] + ["downgrade"] * 3
    assert gw.metric("sg_budget_refusals_total", team="beta", action="downgrade") == 3
    month = gw.app[LEDGER].now().strftime("%Y-%m")
    assert await gw.app[LEDGER].refusals("beta", month) == {("beta-daily", "downgrade"): 3}


async def test_token_budgets_hold_too(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompt = count_chat_prompt(MESSAGES, "gpt-4o")
    monkeypatch.setenv("SPENDGATE_GAMMA_TOKENS", str(5 * (prompt + MAX_TOKENS)))
    mock_upstream.options.latency_s = 0.3
    gw = await gateway_factory("budgets.yaml", teams=("gamma",))
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(post_chat(http, gw.url, gw.keys["gamma"]) for _ in range(50))
        )
    assert [s for s, _, _ in results].count(200) == 5
    assert "x-sg-budget-remaining-tokens" in next(h for s, h, _ in results if s == 200)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_gateway_processes_sharing_redis_never_overspend(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    k = 12
    # Each answer costs within 0.4 % of its worst case (the mock writes all 400 tokens; only the
    # prompt's count differs), so settles that land before a slow request reserves can never
    # free room for another: exactly k, however the two processes' requests interleave.
    output = 400
    mock_upstream.options.completion_tokens = output
    worst = gpt4o_worst_case_nano(output)
    limit = k * worst + worst // 2
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{limit / 1e9:.9f}")
    # The other process runs on the real clock, so this one does too (their leases and periods
    # must agree); a budget without periods keeps today's date out of the test.
    monkeypatch.setenv("SPENDGATE_ALPHA_PERIOD", "total")
    mock_upstream.options.latency_s = 0.5
    first = await gateway_factory("budgets.yaml", teams=("alpha",), clock=time.time)
    port = _free_port()
    env = {**os.environ, "SPENDGATE_SPOOL_DIR": str(tmp_path / "spool2")}
    log = (tmp_path / "second.log").open("wb")
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(first.config_path),
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    other = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while True:  # the second process is up when it answers
                    try:
                        async with http.get(other + "/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
            key = first.keys["alpha"]
            results = await asyncio.gather(
                *(
                    post_chat(http, first.url if i % 2 else other, key, max_tokens=output)
                    for i in range(200)
                )
            )
    finally:
        second.terminate()
        second.wait(timeout=20)
        log.close()
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) == k
    await first.app[PIPELINE].accountant.drain()
    # The second process settled before exiting (SIGTERM drains its settles).
    assert await spent_nano(first, "alpha") <= limit
    served = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert len(served) == k


async def test_revenue_passed_with_the_request_reaches_the_ledger(
    gateway_factory: GatewayFactory, store_url: str
) -> None:
    gw = await gateway_factory("budgets.yaml", teams=("alpha",))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.base_url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": MAX_TOKENS},
            headers={"Authorization": f"Bearer {gw.keys['alpha']}", "x-sg-revenue-usd": "0.05"},
        ) as response:
            assert response.status == 200
        async with http.post(
            gw.base_url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {gw.keys['alpha']}", "x-sg-revenue-usd": "lots"},
        ) as response:
            assert response.status == 400
    await gw.app[PIPELINE].accountant.drain()
    (event,) = [e for e in await stream_events(store_url, "alpha") if e.status == 200]
    assert event.revenue_nano == 50_000_000


async def test_budget_alerts_reach_the_webhook_once_per_threshold(
    gateway_factory: GatewayFactory,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    received: list[dict[str, Any]] = []
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        footers = [r["attachments"][0]["footer"] for r in received]
        if footers.count("spendgate budget_threshold") >= 2 and (
            "spendgate budget_exceeded" in footers
        ):
            all_in.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    slack = TestServer(app)
    await slack.start_server()
    worst = gpt4o_worst_case_nano()
    monkeypatch.setenv("SPENDGATE_WEBHOOK_URL", str(slack.make_url("/hook")))
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", f"{(4 * worst) / 1e9:.9f}")
    gw = await gateway_factory("alerts.yaml", teams=("alpha",))
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(8):  # spends the budget one request at a time, then is refused
                statuses.append((await post_chat(http, gw.url, gw.keys["alpha"]))[0])
                await gw.app[PIPELINE].accountant.drain()
        await asyncio.wait_for(all_in.wait(), timeout=10)
    finally:
        await slack.close()
    # Each request costs $0.0001175 (the mock's 7 prompt and 10 output tokens at gpt-4o's
    # price) and reserves $0.0001325: four are served (88.7% spent), the rest refused.
    assert statuses == [200] * 4 + [429] * 4
    thresholds = [
        r["text"] for r in received if "budget_threshold" in r["attachments"][0]["footer"]
    ]
    assert len(thresholds) == 2
    assert "reached 50%" in thresholds[0] and "reached 75%" in thresholds[1]
    exceeded = [r for r in received if "budget_exceeded" in r["attachments"][0]["footer"]]
    assert len(exceeded) == 1, "refusals after the first are within the cooldown"
    assert "alpha-daily" in exceeded[0]["text"]
    assert gw.metric("sg_alerts_total", kind="budget_exceeded", outcome="sent") == 1
    assert gw.metric("sg_alerts_total", kind="budget_exceeded", outcome="suppressed") >= 1


@pytest.mark.parametrize("method", ["proportional", "even", "fixed"])
async def test_chargeback_through_the_gateway_sums_exactly(
    gateway_factory: GatewayFactory, tmp_path: Path, method: str
) -> None:
    from tests.conftest import ADMIN_KEY, FIXTURES

    allocation = f"allocation: {method}"
    if method == "fixed":
        allocation += "\n      weights: {alpha: 3, beta: 2, gamma: 1}"
    text = (FIXTURES / "chargeback.yaml").read_text()
    config = tmp_path / f"chargeback-{method}.yaml"
    config.write_text(
        text.replace("      ALLOCATION", "      " + allocation).replace(
            "    ALLOCATION", "    " + allocation.replace("\n      ", "\n    ")
        )
    )
    gw = await gateway_factory(str(config), teams=("alpha", "beta", "gamma", "platform"))
    async with aiohttp.ClientSession() as http:
        # Uneven traffic, so that proportional, even and fixed shares all differ.
        for team, n in (("alpha", 5), ("beta", 2), ("gamma", 1), ("platform", 3)):
            for _ in range(n):
                assert (await post_chat(http, gw.url, gw.keys[team]))[0] == 200
        await gw.app[PIPELINE].accountant.drain()
        month = datetime.fromtimestamp(gw.clock(), UTC).strftime("%Y-%m")
        async with asyncio.timeout(10):
            while True:  # until the embedded aggregator has rolled up all 11 requests
                async with http.get(
                    gw.url + "/admin/reports/chargeback",
                    params={"period": month, "format": "json"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                ) as r:
                    assert r.status == 200
                    report = await r.json()
                if sum(s["requests"] for s in report["statements"]) == 11:
                    break
                await asyncio.sleep(0.05)
    nano = usd_to_nano
    direct = nano(report["direct_total_usd"])
    fee = nano(report["shared_costs_usd"]["platform-fee"])
    assert fee == 1_000_000_000_007  # $1000.000000007, an amount no split divides evenly
    statements = {s["team"]: s for s in report["statements"]}
    payers = ["alpha", "beta", "gamma"]
    # Every nano-dollar lands on a paying team, and the statements reconcile exactly.
    assert sum(nano(statements[t]["total_usd"]) for t in payers) == direct + fee
    assert nano(statements["platform"]["total_usd"]) == 0
    assert nano(report["unallocated_usd"]) == 0
    fee_parts = [nano(statements[t]["allocated_usd"]["platform-fee"]) for t in payers]
    assert sum(fee_parts) == fee
    if method == "even":
        assert max(fee_parts) - min(fee_parts) <= 1
    if method == "fixed":
        assert fee_parts[0] // 3 == pytest.approx(fee_parts[2], abs=1)


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_a_hung_store_is_bounded_and_follows_on_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy: str, silent_port: int
) -> None:
    """A Redis that accepts connections and never answers: the reserve gives up after
    STORE_TIMEOUT_S and the request is served (open) or refused with 503 (closed)."""
    from gateway import accounting
    from gateway.accounting import Accountant, Record
    from gateway.budgets.alerts import AlertSender
    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.loader import load_config
    from gateway.errors import ServiceUnavailable
    from gateway.metrics import Metrics
    from gateway.store.connect import close_store, open_store
    from gateway.types import Principal

    env = {
        "SPENDGATE_STORE_URL": f"redis://127.0.0.1:{silent_port}/0",
        "SPENDGATE_ON_UNAVAILABLE": policy,
        "SPENDGATE_SPOOL_DIR": str(tmp_path),
        "SPENDGATE_UPSTREAM_URL": "http://x/v1",
        "SPENDGATE_ADMIN_KEY": "sk-sg-admin-test-key-0123456789",
    }
    config = load_config(Path(__file__).parent / "fixtures" / "budgets.yaml", env=env)
    monkeypatch.setattr(accounting, "STORE_TIMEOUT_S", 0.3)
    redis = await open_store(config.store.url)
    try:
        async with aiohttp.ClientSession() as http:
            accountant = Accountant(
                BudgetLedger(redis),
                BudgetRegistry(redis, config.budgets.rules),
                None,
                AlertSender(http, redis, config.alerts),
                Metrics(),
            )
            record = Record(
                "req-hung",
                "chat/completions",
                0.0,
                principal=Principal(key_id="key_x", team="alpha"),
            )
            route = config.models["gpt-4o"]
            body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 5}
            async with asyncio.timeout(5):  # never the 30 s a hung socket would otherwise take
                if policy == "open":
                    assert await accountant.reserve(record, config, route, body, 10) is None
                    assert record.reservation is None  # served without a budget check
                else:
                    with pytest.raises(ServiceUnavailable):
                        await accountant.reserve(record, config, route, body, 10)
    finally:
        await close_store(redis)


async def test_cache_hits_billed_at_a_fraction_count_against_the_budget(
    gateway_factory: GatewayFactory, store_url: str, tmp_path: Path
) -> None:
    from tests.conftest import FIXTURES

    text = (FIXTURES / "budgets.yaml").read_text()
    config = tmp_path / "budgets-cache.yaml"
    config.write_text(
        text.replace(
            "teams:\n",
            "cache:\n  hit_cost_fraction: 0.5\n  routes:\n    gpt-4o: {mode: always}\nteams:\n",
            1,
        )
    )
    gw = await gateway_factory(str(config), teams=("alpha",))
    async with aiohttp.ClientSession() as http:
        miss = await post_chat(http, gw.url, gw.keys["alpha"])
        await gw.app[PIPELINE].accountant.drain()  # the miss is settled: its actual cost counts
        hit = await post_chat(http, gw.url, gw.keys["alpha"])
    assert (miss[1]["x-sg-cache"], hit[1]["x-sg-cache"]) == ("miss", "hit")
    miss_cost = usd_to_nano(miss[1]["x-sg-cost-usd"])
    hit_cost = usd_to_nano(hit[1]["x-sg-cost-usd"])
    assert hit_cost == (miss_cost + 1) // 2  # half the list cost, rounded half up
    # The hit says what is left after it, like any answer: $1000 minus both costs.
    assert usd_to_nano(hit[1]["x-sg-budget-remaining-usd"]) == 1000 * 10**9 - miss_cost - hit_cost
    await gw.app[PIPELINE].accountant.drain()
    await gw.app[LEDGER].close_leases()  # the hit was held in a lease (far from the limit)
    assert await spent_nano(gw, "alpha") == miss_cost + hit_cost
