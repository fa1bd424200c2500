"""The approval limits' quick bound (`enforce._within`): a request it lets through is within
every limit by the exact, policy by policy check (`enforce._over`), whatever its size, on a
route whose deployments price input and output differently; and the requests over a limit
are the ones the exact check names."""

from __future__ import annotations

import random

import pytest

from gateway.accounting import Record
from gateway.config.loader import load_text
from gateway.config.model import Config
from gateway.metrics import Metrics
from gateway.plan import Plan
from gateway.policies import enforce
from gateway.policies.enforce import PolicyEnforcer
from gateway.types import Principal

CONFIG = """
server: {admin_key: sk-admin-test-key-0123456789}
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: upstream-key-0123456789}
models:
  mixed:
    deployments:
      - {provider: mock, model: cheap-in, id: a}
      - {provider: mock, model: cheap-out, id: b}
pricing:
  overrides:
    cheap-in: {input_per_1m: 0.5, output_per_1m: 12, cached_input_per_1m: 0.25}
    cheap-out: {input_per_1m: 3, output_per_1m: 2, reasoning_per_1m: 9}
policies:
  approvals:
    - {name: cost, max_cost_usd: 0.02}
    - {name: shape, max_tokens: 1500, max_n: 3, max_prompt_tokens: 9000}
"""

PRINCIPAL = Principal("key1", "search", environment="prod", workload="chat")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_text(CONFIG, "test.yaml", env={})


def request(config: Config, rng: random.Random) -> tuple[Record, Plan]:
    body: dict[str, object] = {"model": "mixed", "messages": []}
    if rng.random() < 0.9:
        body["max_completion_tokens"] = rng.randint(1, 2000)
    if rng.random() < 0.5:
        body["n"] = rng.randint(1, 5)
    route = config.models["mixed"]
    prompt = rng.randint(1, 12_000)  # as if counted: the exact check cannot count it lower
    plan = Plan(body, route, route.deployments[0].price, prompt, prompt)
    record = Record("r", "chat/completions", 0.0, principal=PRINCIPAL, model="mixed")
    return record, plan


def test_the_quick_bound_never_passes_a_request_the_exact_check_refuses(config: Config) -> None:
    enforcer = PolicyEnforcer(None, Metrics())
    rng = random.Random(7)
    quick = over = 0
    for _ in range(3000):
        record, plan = request(config, rng)
        verdict = enforcer._verdict(config.policies, PRINCIPAL, "mixed", plan.route)
        exact = [p.name for p, _ in enforce._over(record, plan, verdict)]
        if enforce._within(record, plan, verdict):
            quick += 1
            assert exact == [], (plan.body, plan.prompt_bound)
        _, judged = enforcer.judge(config, record, plan)
        assert [p.name for p, _ in judged] == exact
        over += bool(exact)
    # Both sides were exercised: many requests pass on the bound, many are over a limit.
    assert quick > 500 and over > 500
