"""Chargeback statements reconcile exactly with shared costs and a shared team, for every
allocation method; showback unit economics and margin."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import orjson
import pytest

from gateway.analytics.chargeback import SHARED_SPEND, chargeback
from gateway.analytics.rollupdata import month_range
from gateway.analytics.showback import prorated, showback
from gateway.config.model import (
    Allocation,
    AllocationMethod,
    Config,
    ServerConfig,
    SharedCost,
    StoreConfig,
    TeamConfig,
)
from gateway.types import SpendEvent
from tests.ledger import T0_MS, event, rollup_data

MONTH = datetime.fromtimestamp(T0_MS / 1000, UTC).strftime("%Y-%m")
START, END = month_range(MONTH)


def make_config(
    method: AllocationMethod = "proportional",
    weights: dict[str, int] | None = None,
    shared_costs: tuple[SharedCost, ...] | None = None,
    **teams: TeamConfig,
) -> Config:
    allocation = Allocation(method, weights or {})
    default_costs = (
        SharedCost("platform-fee", 1_000_000_007, allocation),  # a prime number of nanos
        SharedCost("cache-infra", 1, Allocation("even")),  # 1 nano over several teams
    )
    return Config(
        source="<test>",
        server=ServerConfig(),
        store=StoreConfig(),
        providers={},
        models={},
        teams=teams
        or {
            "alpha": TeamConfig("alpha", revenue_per_request_nano=2_000_000),
            "beta": TeamConfig("beta", monthly_revenue_nano=10_000_000_000),
            "gamma": TeamConfig("gamma"),
            "platform": TeamConfig("platform", shared=True),
        },
        shared_costs=default_costs if shared_costs is None else shared_costs,
        shared_spend_allocation=allocation,
    )


def month_events(seed: int = 5, n: int = 300) -> list[SpendEvent]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        team = rng.choice(("alpha", "alpha", "beta", "platform", "delta"))  # delta: unconfigured
        cost = rng.randrange(1, 3_000_001)
        events.append(
            event(
                i,
                team=team,
                ts_ms=T0_MS + rng.randrange(-3, 10) * 86_400_000,
                project=rng.choice(("search", "chat", None)),
                requested_model=rng.choice(("gpt-4o", "o3-mini")),
                cost_nano=cost,
                list_cost_nano=cost + rng.randrange(0, 100_000),
                optimization="cache",
                tags={"exp": rng.choice("xy")},
            )
        )
    return events


@pytest.mark.parametrize("method", ["proportional", "even", "fixed"])
def test_chargeback_reconciles_exactly(method: AllocationMethod) -> None:
    events = month_events()
    config = make_config(method, {"alpha": 3, "beta": 1, "gamma": 1, "delta": 0})
    result = chargeback(rollup_data(events, START, END), config, MONTH)
    direct_all = sum(e.cost_nano for e in events)
    shared = 1_000_000_007 + 1
    assert sum(s.total_nano for s in result.statements) == direct_all + shared
    assert result.total_nano == result.direct_total_nano + result.shared_total_nano
    assert result.direct_total_nano == direct_all
    assert result.unallocated_nano == 0
    by_team = {s.team: s for s in result.statements}
    assert set(by_team) == {"alpha", "beta", "gamma", "platform", "delta"}
    # The shared team passes its spend on entirely.
    platform = by_team["platform"]
    platform_spend = sum(e.cost_nano for e in events if e.team == "platform")
    assert platform.direct_nano == platform_spend
    assert platform.passed_on_nano == -platform_spend
    assert platform.total_nano == 0
    assert not platform.allocations
    received = sum(s.allocations.get(SHARED_SPEND, 0) for s in result.statements)
    assert received == platform_spend
    for label, amount in (("platform-fee", 1_000_000_007), ("cache-infra", 1)):
        assert sum(s.allocations.get(label, 0) for s in result.statements) == amount
    for s in result.statements:
        assert s.total_nano == s.direct_nano + s.passed_on_nano + sum(s.allocations.values())
        assert s.direct_nano == sum(e.cost_nano for e in events if e.team == s.team)
    if method == "fixed":
        assert by_team["delta"].allocations.get("platform-fee", 0) == 0
        assert by_team["alpha"].allocations["platform-fee"] == 600_000_004  # 3/5, +1 remainder
    if method == "proportional":
        assert by_team["gamma"].allocations.get("platform-fee", 0) == 0  # no spend, no share


def test_chargeback_revenue_margin_and_project_detail() -> None:
    events = month_events()
    result = chargeback(rollup_data(events, START, END), make_config(), MONTH)
    by_team = {s.team: s for s in result.statements}
    alpha = [e for e in events if e.team == "alpha"]
    assert by_team["alpha"].revenue_nano == 2_000_000 * len(alpha)
    assert (
        by_team["alpha"].margin_nano == by_team["alpha"].revenue_nano - by_team["alpha"].total_nano
    )
    assert by_team["beta"].revenue_nano == 10_000_000_000
    assert by_team["gamma"].revenue_nano is None
    assert by_team["alpha"].projects["search"] == sum(
        e.cost_nano for e in alpha if e.project == "search"
    )
    assert by_team["alpha"].project_models["-", "o3-mini"] == sum(
        e.cost_nano for e in alpha if e.project is None and e.requested_model == "o3-mini"
    )
    document = result.to_dict()
    assert orjson.loads(orjson.dumps(document))["period"] == MONTH


def test_no_team_to_bill_leaves_shared_costs_unallocated_but_reconciled() -> None:
    events = [event(1, team="platform", cost_nano=5)]
    config = make_config(platform=TeamConfig("platform", shared=True))
    result = chargeback(rollup_data(events, START, END), config, MONTH)
    assert result.unallocated_nano == 1_000_000_008
    assert result.statements[0].total_nano == 5  # nobody to pass it on to
    assert result.total_nano == 5 + 1_000_000_008


def test_showback_unit_economics() -> None:
    events = [
        event(1, cost_nano=1_000, list_cost_nano=1_500, optimization="cache", tags={"run": "7"}),
        event(2, cost_nano=2_001, prompt_tokens=1000, completion_tokens=1, tags={"run": "7"}),
        event(
            3,
            team="alpha",
            kind="external",
            cost_nano=5_000_000,
            list_cost_nano=5_000_000,
            prompt_tokens=0,
            completion_tokens=0,
            tags={"run": "7"},
        ),
    ]
    config = make_config(alpha=TeamConfig("alpha", monthly_revenue_nano=3_000_000_000))
    result = showback(rollup_data(events, START, END), config.teams)
    (alpha,) = result.teams
    u = alpha.usage
    assert u.cost_nano == 5_003_001
    assert u.external_nano == 5_000_000
    assert u.requests == 2
    assert u.cost_per_request_nano == 1_501  # 3001 / 2 = 1500.5, half up
    assert u.tokens == 120 + 1001
    assert u.cost_per_1k_tokens_nano == 2_677  # 3001 * 1000 / 1121 = 2677.07
    assert u.savings_by_optimization == {"cache": 500}
    assert alpha.tags["run=7"].cost_nano == 5_003_001  # the training run includes its GPU bill
    assert u.revenue_nano == 3_000_000_000  # the whole month
    assert u.margin_nano == 3_000_000_000 - 5_003_001
    assert result.total.cost_nano == 5_003_001
    assert alpha.to_dict()["cost_per_request_usd"] == "0.000001501"


def test_monthly_revenue_prorates_exactly() -> None:
    first, last = month_range("2026-02")
    days = [date(2026, 2, d) for d in range(1, 29)]
    parts = [prorated(1_000_000_001, d, d) for d in days]
    assert sum(parts) == 1_000_000_001 == prorated(1_000_000_001, first, last)
    assert max(parts) - min(parts) <= 1
    # Across a month boundary: each month spread over its own days.
    assert prorated(31, date(2026, 1, 31), date(2026, 2, 1)) == 1 + 2  # 31/31, then 31/28 -> 2
