"""Tier decisions: request features, each rule routing as declared (also through the mock
upstream, which records the model reached), first match wins, the budget threshold, cascade
ladders and the x-sg-route explanation."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.config.model import CascadeConfig, TierCondition, TierConfig, TierRule
from gateway.errors import InvalidRequest
from gateway.routing.cascade import Escalation
from gateway.routing.tiers import RequestFeatures, decide, explain, features, tier_hint
from gateway.types import Principal

CHEAP, MID, BEST = "gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"
TIER = TierConfig(
    name="auto",
    candidates=(CHEAP, MID, BEST),
    default=CHEAP,
    rules=(
        TierRule("budget-saver", CHEAP, TierCondition(budget_used_pct_gte=90)),
        TierRule("premium-hint", BEST, TierCondition(hint=("premium",))),
        TierRule("long-prompt", BEST, TierCondition(prompt_tokens_gt=4000)),
        TierRule("research-team", BEST, TierCondition(team=("research",))),
        TierRule("prod-project", MID, TierCondition(project=("checkout",), environment=("prod",))),
        TierRule("tools", MID, TierCondition(has_tools=True)),
        TierRule("json", MID, TierCondition(has_response_format=True)),
        TierRule("code", MID, TierCondition(has_code=True)),
        TierRule("long-chat", MID, TierCondition(messages_gt=10)),
        TierRule("small", CHEAP, TierCondition(prompt_tokens_lte=50)),
    ),
    cascade=CascadeConfig(),
)
ALPHA = Principal(key_id="key_a", team="alpha", project="web", environment="dev")


def feats(**overrides: Any) -> RequestFeatures:
    base: dict[str, Any] = {
        "endpoint": "chat/completions",
        "prompt_tokens": 500,
        "hint": None,
        "has_tools": False,
        "has_response_format": False,
        "has_code": False,
        "messages": 2,
    }
    return RequestFeatures(**{**base, **overrides})


def chat(*texts: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": t} for t in texts],
        **extra,
    }


# --- features ---------------------------------------------------------------------------------


def test_hint_from_header_or_metadata() -> None:
    assert tier_hint({}, {}) is None
    assert tier_hint({}, {"x-sg-tier": "Premium"}) == "premium"
    assert tier_hint({"metadata": {"sg_tier": "economy"}}, {}) == "economy"
    # The header wins over metadata.
    assert tier_hint({"metadata": {"sg_tier": "economy"}}, {"x-sg-tier": "standard"}) == "standard"
    with pytest.raises(InvalidRequest, match="x-sg-tier must be one of economy, standard, premium"):
        tier_hint({}, {"x-sg-tier": "premum"})
    with pytest.raises(InvalidRequest, match=r"metadata\.sg_tier"):
        tier_hint({"metadata": {"sg_tier": 3}}, {})


def test_features_of_a_chat_request() -> None:
    body = chat(
        "first",
        "Why does this fail?\n```python\nprint(1/0)\n```",
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"},
        stream=True,
    )
    f = features(body, "chat/completions", 1234, {"x-sg-tier": "economy"})
    assert f == RequestFeatures(
        endpoint="chat/completions",
        prompt_tokens=1234,
        hint="economy",
        has_tools=True,
        has_response_format=True,
        has_code=True,
        messages=2,
        stream=True,
    )
    plain = features(chat("hello", response_format={"type": "text"}), "chat/completions", 5, {})
    assert not (plain.has_tools or plain.has_response_format or plain.has_code or plain.stream)


@pytest.mark.parametrize(
    ("text", "is_code"),
    [
        ("```\nanything fenced\n```", True),
        ("def add(a, b):\n    return a + b", True),
        ("import numpy as np\nx = np.zeros(3)", True),
        ("SELECT id, name FROM users WHERE age > 3", True),
        ("const total = items.reduce((a, b) => a + b, 0);", True),
        ("#include <stdio.h>\nint main() {\n  return 0;\n}", True),
        ("fix this: for (int i = 0; i < n; i++) {\n  sum += i;\n}", True),
        ("What is the capital of France?", False),
        ("Write a short poem about the sea, please.", False),
        ("I'd like a class recommendation for my kid.", False),
    ],
)
def test_code_detection(text: str, is_code: bool) -> None:
    assert features(chat(text), "chat/completions", 10, {}).has_code is is_code


def test_only_the_last_user_message_is_checked_for_code() -> None:
    body = chat("def f():\n    pass", "thanks, now tell me a joke")
    assert not features(body, "chat/completions", 10, {}).has_code


def test_features_of_other_endpoints() -> None:
    responses = {"model": "auto", "input": [{"role": "user", "content": "x"}] * 3, "text": {}}
    f = features(responses, "responses", 10, {})
    assert f.messages == 3 and not f.has_response_format
    schema = {"format": {"type": "json_schema", "name": "x", "schema": {}}}
    assert features({**responses, "text": schema}, "responses", 10, {}).has_response_format
    assert features({"model": "auto", "input": "SELECT a FROM b"}, "responses", 1, {}).has_code
    completion = features({"model": "auto", "prompt": "def f(x):"}, "completions", 3, {})
    assert completion.messages == 1 and completion.has_code


# --- decide -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "model", "f", "principal", "budget"),
    [
        ("budget-saver", CHEAP, feats(hint="premium"), ALPHA, 95.0),
        ("premium-hint", BEST, feats(hint="premium"), ALPHA, 10.0),
        ("long-prompt", BEST, feats(prompt_tokens=4001), ALPHA, None),
        ("research-team", BEST, feats(), Principal(key_id="k", team="research"), None),
        (
            "prod-project",
            MID,
            feats(),
            Principal(key_id="k", team="alpha", project="checkout", environment="prod"),
            None,
        ),
        ("tools", MID, feats(has_tools=True), ALPHA, None),
        ("json", MID, feats(has_response_format=True), ALPHA, None),
        ("code", MID, feats(has_code=True), ALPHA, None),
        ("long-chat", MID, feats(messages=11), ALPHA, None),
        ("small", CHEAP, feats(prompt_tokens=50), ALPHA, None),
        (None, CHEAP, feats(), ALPHA, None),
    ],
)
def test_each_rule_routes_as_declared(
    rule: str | None, model: str, f: RequestFeatures, principal: Principal, budget: float | None
) -> None:
    decision = decide(TIER, f, principal, budget)
    assert (decision.rule, decision.model) == (rule, model)
    assert decision.tier == "auto"
    assert decision.reason == ("no rule matched" if rule is None else decision.reason)


def test_budget_threshold_switches_exactly_at_the_percentage() -> None:
    f = feats(hint="premium")
    assert decide(TIER, f, ALPHA, 89.99).model == BEST
    assert decide(TIER, f, ALPHA, 90.0).model == CHEAP
    assert decide(TIER, f, ALPHA, None).model == BEST  # no budget applies: never downgraded


def test_all_conditions_of_a_rule_must_hold() -> None:
    prod_other_project = Principal(key_id="k", team="a", project="web", environment="prod")
    assert decide(TIER, feats(), prod_other_project).rule is None
    no_project = Principal(key_id="k", team="a", environment="prod")
    assert decide(TIER, feats(), no_project).rule is None


def test_first_matching_rule_wins_and_reason_says_why() -> None:
    decision = decide(TIER, feats(hint="premium", prompt_tokens=9000, has_tools=True), ALPHA)
    assert decision.rule == "premium-hint"
    assert decision.reason == "hint=premium"
    long = decide(TIER, feats(prompt_tokens=9000), ALPHA)
    assert long.reason == "prompt_tokens 9000 > 4000"


def test_empty_condition_always_matches() -> None:
    tier = TierConfig("t", (CHEAP, BEST), CHEAP, (TierRule("all", BEST),))
    decision = decide(tier, feats(), ALPHA)
    assert (decision.rule, decision.model, decision.reason) == ("all", BEST, "always")


def test_cascade_ladder_runs_from_the_decided_model_upwards() -> None:
    assert decide(TIER, feats(), ALPHA).cascade == (CHEAP, MID, BEST)
    assert decide(TIER, feats(has_tools=True), ALPHA).cascade == (MID, BEST)
    assert decide(TIER, feats(hint="premium"), ALPHA).cascade == ()  # nothing better
    assert decide(TIER, feats(stream=True), ALPHA).cascade == ()  # streams: not unless allowed
    streaming = TierConfig("s", (CHEAP, BEST), CHEAP, cascade=CascadeConfig(stream=True))
    assert decide(streaming, feats(stream=True), ALPHA).cascade == (CHEAP, BEST)
    assert decide(TIER, feats(endpoint="embeddings"), ALPHA).cascade == ()
    no_cascade = TierConfig("n", (CHEAP, BEST), CHEAP)
    assert decide(no_cascade, feats(), ALPHA).cascade == ()


def test_explain() -> None:
    decision = decide(TIER, feats(prompt_tokens=5000), ALPHA)
    assert explain(decision) == "tier=auto; rule=long-prompt; model=gpt-4o"
    default = decide(TIER, feats(), ALPHA)
    assert explain(default) == "tier=auto; rule=default; model=gpt-4o-mini"
    steps = [Escalation(CHEAP, MID, "length"), Escalation(MID, BEST, "invalid_json")]
    assert explain(default, escalations=steps) == (
        "tier=auto; rule=default; model=gpt-4o; "
        "cascade=gpt-4o-mini(length)>gpt-4.1-mini(invalid_json)>gpt-4o"
    )


# --- through the mock upstream ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "principal", "budget", "reached"),
    [
        ({}, chat("hello there"), ALPHA, None, CHEAP),
        ({"x-sg-tier": "premium"}, chat("hello"), ALPHA, None, BEST),
        ({"x-sg-tier": "premium"}, chat("hello"), ALPHA, 92.5, CHEAP),
        ({}, chat("def f(x):\n    return x"), ALPHA, None, MID),
        ({}, chat("x", tools=[{"type": "function", "function": {"name": "f"}}]), ALPHA, None, MID),
        ({}, chat("hi"), Principal(key_id="k", team="research"), None, BEST),
        ({}, chat(*(["more"] * 11)), ALPHA, None, MID),
    ],
)
async def test_decisions_reach_the_declared_model_upstream(
    mock_upstream: Any,
    headers: dict[str, str],
    body: dict[str, Any],
    principal: Principal,
    budget: float | None,
    reached: str,
) -> None:
    tokens = 100  # not a rule's concern here; the pipeline counts them with tiktoken
    decision = decide(TIER, features(body, "chat/completions", tokens, headers), principal, budget)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            mock_upstream.base_url + "/chat/completions", json={**body, "model": decision.model}
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["model"] == reached
    assert [r.model for r in mock_upstream.requests] == [reached]
