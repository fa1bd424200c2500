"""The cost optimizers through the gateway, against the mock upstream (which records the model
every call reached): tiering rules, budget-state downgrade, cascades, the response cache
(streaming and not, per team, TTL, bypass and refresh), coalescing and embeddings batching, and
the savings each records in the ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from gateway.app.state import PIPELINE
from gateway.providers.mock import MockUpstream
from gateway.providers.mock.embeddings import embedding_for
from gateway.types import Principal
from tests.clock import RunningClock
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory

SHORT = [{"role": "user", "content": "What is a budget?"}]
LONG = [{"role": "user", "content": " ".join(["token"] * 60)}]


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory("optimizers.yaml")


async def chat(
    gw: Gateway, team: str = "alpha", headers: dict[str, str] | None = None, **body: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    payload = {"model": "auto", "messages": SHORT, **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.base_url + "/chat/completions",
            json=payload,
            headers={"Authorization": f"Bearer {gw.keys[team]}", **(headers or {})},
        ) as response,
    ):
        return response.status, dict(response.headers), await response.json()


def models(mock: MockUpstream) -> list[str | None]:
    return [r.model for r in mock.requests]


@pytest.mark.parametrize(
    ("kwargs", "headers", "rule", "model"),
    [
        ({}, {}, "default", "gpt-4o-mini"),
        ({}, {"x-sg-tier": "premium"}, "premium-hint", "gpt-4o"),
        ({"metadata": {"sg_tier": "premium"}}, {}, "premium-hint", "gpt-4o"),
        ({"messages": LONG}, {}, "long-prompt", "gpt-4o"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            {},
            "tools",
            "gpt-4o",
        ),
    ],
)
async def test_each_tier_rule_routes_as_declared(
    gw: Gateway,
    mock_upstream: MockUpstream,
    kwargs: dict[str, Any],
    headers: dict[str, str],
    rule: str,
    model: str,
) -> None:
    status, got, _ = await chat(gw, headers=headers, **kwargs)
    assert status == 200
    assert got["x-sg-route"] == f"tier=auto; rule={rule}; model={model}"
    assert got["x-sg-model"] == model
    assert models(mock_upstream) == [model]
    assert gw.metric("sg_tier_decisions_total", tier="auto", rule=rule, model=model) == 1


async def test_team_and_environment_rules(gw: Gateway, mock_upstream: MockUpstream) -> None:
    _, got, _ = await chat(gw, team="beta", headers={"x-sg-env": "prod"})
    assert got["x-sg-route"] == "tier=auto; rule=beta-prod; model=gpt-4o"
    _, got, _ = await chat(gw, team="beta", headers={"x-sg-env": "dev"})
    assert got["x-sg-model"] == "gpt-4o-mini"


async def test_a_bad_tier_hint_is_400(gw: Gateway) -> None:
    status, _, body = await chat(gw, headers={"x-sg-tier": "platinum"})
    assert (status, body["error"]["code"]) == (400, "invalid_tier_hint")


async def test_budget_state_downgrades_at_the_threshold(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A premium request on gpt-4o costs $0.0001775 here (7 prompt tokens at $2.50 per 1M and
    # the mock's 16 output tokens at $10 per 1M): 35.5% of this budget.
    monkeypatch.setenv("SPENDGATE_ALPHA_LIMIT_USD", "0.0005")
    gw = await gateway_factory("optimizers.yaml")
    accountant = gw.app[PIPELINE].accountant
    served = []
    for _ in range(4):
        _, got, _ = await chat(gw, headers={"x-sg-tier": "premium"}, max_tokens=64)
        served.append(got["x-sg-route"])
        await accountant.drain()  # the next decision sees this request's settled spend
    # Below 50% used, the premium hint wins; from 50% on, the budget-saver rule does.
    pct = accountant.used_pct(Principal(key_id="", team="alpha"))
    assert pct is not None and pct >= 50
    first_saver = served.index("tier=auto; rule=budget-saver; model=gpt-4o-mini")
    assert all("premium-hint" in s for s in served[:first_saver])
    assert all("budget-saver" in s for s in served[first_saver:])
    assert first_saver == 2  # after 35.5%, then 71%


async def test_a_cascade_escalates_on_a_cut_off_answer_only(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    # 50 output tokens is enough for the mock's 16-word answer: no escalation.
    status, got, _ = await chat(gw, model="smart", max_tokens=50)
    assert status == 200 and models(mock_upstream) == ["gpt-4o-mini"]
    assert got["x-sg-route"] == "tier=smart; rule=default; model=gpt-4o-mini"
    mock_upstream.clear_requests()
    # 5 tokens cut the answer off ("length"): gpt-4o is asked, and its answer returned.
    status, got, _ = await chat(gw, model="smart", max_tokens=5)
    assert models(mock_upstream) == ["gpt-4o-mini", "gpt-4o"]
    assert got["x-sg-model"] == "gpt-4o"
    assert got["x-sg-route"] == (
        "tier=smart; rule=default; model=gpt-4o; cascade=gpt-4o-mini(length)>gpt-4o"
    )
    assert gw.metric("sg_cascade_escalations_total", tier="smart", check="length") == 1
    # Both calls are billed: the client's cost is the sum of the two.
    mini = 7 * 0.15 + 5 * 0.6  # prompt 7 tokens (3 + 4 words) at $0.15/1M, 5 out at $0.60/1M
    big = 7 * 2.5 + 5 * 10
    assert float(got["x-sg-cost-usd"]) == pytest.approx((mini + big) / 1e6)


async def test_a_cascade_escalates_on_an_empty_answer(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.completion_tokens = 0
    status, got, _ = await chat(gw, model="smart")
    assert status == 200
    assert models(mock_upstream) == ["gpt-4o-mini", "gpt-4o"]
    assert "cascade=gpt-4o-mini(empty)>gpt-4o" in got["x-sg-route"]


async def test_a_cache_hit_makes_no_upstream_call_and_returns_the_same_body(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key=gw.keys["alpha"], max_retries=0
    ) as client:
        first = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=SHORT
        )
        second = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=SHORT
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=SHORT, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert first.headers["x-sg-cache"] == "miss"
    assert second.headers["x-sg-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["x-sg-cost-usd"] == "0.000000000"
    assert text == first.parse().choices[0].message.content
    assert len(mock_upstream.requests) == 1
    assert gw.metric("sg_savings_usd_total", team="alpha", optimization="cache") > 0


async def test_a_streamed_miss_fills_the_cache_for_both_kinds_of_client(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key=gw.keys["alpha"], max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=SHORT, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        replay = await client.chat.completions.create(
            model="gpt-4o-mini", messages=SHORT, stream=True, stream_options={"include_usage": True}
        )
        replayed = [c async for c in replay]
        whole = await client.chat.completions.create(model="gpt-4o-mini", messages=SHORT)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == text
    assert replayed[-1].usage is not None
    assert whole.choices[0].message.content == text
    assert len(mock_upstream.requests) == 1


async def test_another_team_misses(gw: Gateway, mock_upstream: MockUpstream) -> None:
    await chat(gw, model="gpt-4o-mini")
    _, got, _ = await chat(gw, team="beta", model="gpt-4o-mini")
    assert got["x-sg-cache"] == "miss"
    assert len(mock_upstream.requests) == 2


async def test_entries_expire_after_their_ttl(
    gateway_factory: GatewayFactory, mock_upstream: MockUpstream
) -> None:
    # gpt-4o caches only deterministic requests, for 60 s of the gateway's clock.
    clock = RunningClock()
    gw = await gateway_factory("optimizers.yaml", clock=clock)
    await chat(gw, model="gpt-4o", temperature=0)
    clock.advance(59)
    _, got, _ = await chat(gw, model="gpt-4o", temperature=0)
    assert got["x-sg-cache"] == "hit"
    clock.advance(1.5)
    _, got, _ = await chat(gw, model="gpt-4o", temperature=0)
    assert got["x-sg-cache"] == "miss"
    _, got, _ = await chat(gw, model="gpt-4o", temperature=0.7)
    assert got["x-sg-cache"] == "bypass"
    assert len(mock_upstream.requests) == 3


async def test_per_request_no_store_and_refresh(gw: Gateway, mock_upstream: MockUpstream) -> None:
    _, got, _ = await chat(gw, model="gpt-4o-mini", headers={"x-sg-cache": "no-store"})
    assert got["x-sg-cache"] == "bypass"
    _, got, _ = await chat(gw, model="gpt-4o-mini")
    assert got["x-sg-cache"] == "miss"
    _, got, _ = await chat(gw, model="gpt-4o-mini", headers={"x-sg-cache": "refresh"})
    assert got["x-sg-cache"] == "miss"
    _, got, _ = await chat(gw, model="gpt-4o-mini")
    assert got["x-sg-cache"] == "hit"
    assert len(mock_upstream.requests) == 3


async def test_fifty_identical_concurrent_requests_make_one_upstream_call(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.latency_s = 0.3
    results = await asyncio.gather(
        *(chat(gw, model="gpt-4o", temperature=0, max_tokens=20) for _ in range(50))
    )
    assert {status for status, _, _ in results} == {200}
    assert len({str(body["choices"]) for _, _, body in results}) == 1
    assert len(mock_upstream.requests) == 1
    costs = sorted(float(h["x-sg-cost-usd"]) for _, h, _ in results)
    assert costs[:49] == [0.0] * 49 and costs[49] > 0  # the first caller pays
    assert gw.metric("sg_coalesced_requests_total", model="gpt-4o") == 49


async def test_concurrent_embeddings_are_batched_and_split_back(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    async def embed(client: openai.AsyncOpenAI, i: int) -> tuple[str, list[float], int]:
        text = f"document number {i}"
        result = await client.embeddings.create(model="text-embedding-3-small", input=text)
        return text, result.data[0].embedding, result.usage.prompt_tokens

    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key=gw.keys["alpha"], max_retries=0
    ) as client:
        results = await asyncio.gather(*(embed(client, i) for i in range(64)))
    # Batches form within the 50 ms window: how many depends on how fast the SDK's requests
    # arrive (4 on a quiet machine, 7 seen on a loaded CI run, 17 beside a CPU burner); a
    # request that finds no company goes alone, its `input` the string it came with.
    sent = [_inputs(r.body) for r in mock_upstream.requests]
    # On failure, say how the inputs went upstream and whether calls were retried or refused.
    errors = [(s.labels["reason"], s.value) for s in gw.samples("sg_upstream_errors_total")]
    seen = (
        f"inputs per upstream call {[len(i) for i in sent]}; retries "
        f"{gw.metric('sg_upstream_retries_total')}; upstream errors {errors}"
    )
    # Every input went upstream exactly once, and far fewer calls than requests were made.
    assert sorted(i for call in sent for i in call) == sorted(t for t, _, _ in results), seen
    assert len(sent) <= 32 and max(len(i) for i in sent) > 1, seen
    for text, vector, tokens in results:
        assert vector == pytest.approx(embedding_for(text))
        assert tokens > 0
    # Each client is billed for its own tokens: together, exactly what the upstream reported.
    upstream_tokens = sum(_mock_tokens(r.body) for r in mock_upstream.requests)
    assert sum(tokens for _, _, tokens in results) == upstream_tokens


def _inputs(body: dict[str, Any] | None) -> list[str]:
    """An embeddings call's inputs: a merged call's list, or a lone request's one string."""
    given = (body or {})["input"]
    return [given] if isinstance(given, str) else list(given)


def _mock_tokens(body: dict[str, Any] | None) -> int:
    from gateway.providers.mock.tokens import prompt_tokens_for

    return prompt_tokens_for(body or {})


async def test_savings_reach_the_spend_events_and_the_reports(
    gw: Gateway, mock_upstream: MockUpstream
) -> None:
    await chat(gw, model="gpt-4o-mini")
    await chat(gw, model="gpt-4o-mini")  # cache hit
    await chat(gw)  # auto -> gpt-4o-mini: tiering saves against gpt-4o's list price
    await gw.app[PIPELINE].accountant.drain()
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            while True:  # the embedded aggregator rolls events up on its own schedule
                async with http.get(
                    gw.url + "/admin/reports/showback",
                    params={"format": "json"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                ) as r:
                    assert r.status == 200
                    report = await r.json()
                if _requests(report, "alpha") >= 3:
                    break
                await asyncio.sleep(0.05)
    savings = _savings(report, "alpha")
    assert float(savings.get("cache", 0)) > 0
    assert float(savings.get("tiering", 0)) > 0


def _team(report: dict[str, Any], team: str) -> dict[str, Any]:
    return next(t for t in report["teams"] if t["team"] == team)


def _requests(report: dict[str, Any], team: str) -> int:
    teams = [t for t in report.get("teams", []) if t["team"] == team]
    return int(teams[0]["requests"]) if teams else 0


def _savings(report: dict[str, Any], team: str) -> dict[str, str]:
    return dict(_team(report, team)["savings_by_optimization_usd"])
