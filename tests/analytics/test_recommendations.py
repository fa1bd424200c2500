"""Recommendations on a seeded ledger: every estimated saving recomputed by hand below.

The events go through the aggregator's own rollup code (`tests.ledger.rollup_data`, which sums
`aggregator.rollups.increments`), so the signal counting is exercised along with the maths.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from gateway.analytics.recommendations import (
    LOOKBACK_DAYS,
    KeySeen,
    Recommendation,
    recommendations,
)
from gateway.analytics.rollupdata import month_range
from gateway.config.loader import load_text
from gateway.config.model import Config
from gateway.types import SpendEvent
from tests.clock import T0_MS
from tests.ledger import event, rollup_data

START, END = month_range("2026-11")
DAY_MS = 86_400_000

CONFIG = """
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}
models:
  big: {deployments: [{provider: mock, model: big-model}]}
  small: {deployments: [{provider: mock, model: small-model}]}
  embedder: {deployments: [{provider: mock, model: tiny-embed}]}
pricing:
  overrides:
    big-model: {input_per_1m: 10, output_per_1m: 30, cached_input_per_1m: 5}
    small-model: {input_per_1m: 1, output_per_1m: 2}
    tiny-embed: {input_per_1m: 0.01, output_per_1m: 0}
cache:
  enabled: false
teams:
  alpha: {}
  beta: {}
  gamma:
    budgets:
      - {name: gamma-monthly, period: monthly, limit_usd: 100}
"""


def config(text: str = CONFIG) -> Config:
    return load_text(text, "<test>", env={})


def at(day: date, n: int, **fields: object) -> SpendEvent:
    """Event n of `day` (the events of tests.ledger are at T0, 2026-11-05 10:30 UTC)."""
    ts = T0_MS + (day - date(2026, 11, 5)).days * DAY_MS
    return event(n, ts_ms=ts, **fields)


def to_big(n: int, **fields: object) -> SpendEvent:
    """Request n of alpha to the model `big`, on 2026-11-05."""
    served = {"requested_model": "big", "served_model": "big-model", "deployment": "mock/big-model"}
    return at(date(2026, 11, 5), n, **served, **fields)


def alpha_events() -> list[SpendEvent]:
    """50 requests to `big` on 2026-11-05: 30 short and simple, 20 long with tools."""
    out = []
    for i in range(30):
        # 200 prompt + 50 completion tokens: 200 * 10 + 50 * 30 = 3,500 USD per 1M = 3.5 mUSD.
        # 20 identical requests (one fingerprint), 10 distinct: all sampled (first digit 0).
        fingerprint = "0f00000000000000" if i < 20 else f"0e{i:014d}"
        out.append(
            to_big(
                i,
                prompt_tokens=200,
                completion_tokens=50,
                cost_nano=3_500_000,
                list_cost_nano=3_500_000,
                fingerprint=fingerprint,
                shape="simple",
            )
        )
    for i in range(20):
        # 5,000 prompt + 100 completion: 50,000 + 3,000 = 53,000 per 1M = 53 mUSD. Their
        # fingerprints are outside the sample (first digit f); 16 share a prefix, 4 do not.
        prefix = "0a00000000000000" if i < 16 else f"0b{i:014d}"
        out.append(
            to_big(
                100 + i,
                prompt_tokens=5000,
                completion_tokens=100,
                cost_nano=53_000_000,
                list_cost_nano=53_000_000,
                fingerprint=f"f{i:015d}",
                prefix=prefix,
                shape="tools",
            )
        )
    return out


def beta_events() -> list[SpendEvent]:
    # 10 nightly requests at 1 mUSD: nothing waits on them.
    return [
        at(date(2026, 11, 3), 200 + i, team="beta", workload="nightly", cost_nano=1_000_000)
        for i in range(10)
    ]


def gamma_events() -> list[SpendEvent]:
    tag = {"experiment": "exp1"}
    return [
        # The experiment ran on 2026-09-20, then nothing until it spends again in November.
        at(date(2026, 9, 20), 300, team="gamma", tags=tag, cost_nano=1_000_000),
        at(date(2026, 11, 10), 301, team="gamma", tags=tag, cost_nano=2_000_000),
        at(date(2026, 11, 12), 302, team="gamma", tags=tag, cost_nano=2_000_000),
        # The busy key's request, 10 days before the month's end.
        at(date(2026, 11, 20), 303, team="gamma", key_id="key_busy", cost_nano=500_000),
    ]


KEYS = (
    KeySeen("key_idle", "gamma", "old-job", date(2026, 9, 1)),
    KeySeen("key_busy", "gamma", None, date(2026, 9, 1)),
    KeySeen("key_young", "gamma", None, date(2026, 11, 25)),  # too young to judge
    KeySeen("key_declared", "gamma", "in-yaml", None),  # revoked by editing the config
)


def run(cfg: Config | None = None) -> list[Recommendation]:
    cfg = cfg or config()
    events = alpha_events() + beta_events() + gamma_events()
    data = rollup_data(events, START - timedelta(days=LOOKBACK_DAYS), END)
    return recommendations(
        data, cfg, START, END, budgets=cfg.budgets.rules, keys=KEYS, whole_month=True
    )


def by_kind(found: list[Recommendation], kind: str) -> list[Recommendation]:
    return [r for r in found if r.kind == kind]


def test_each_saving_equals_the_hand_computed_figure() -> None:
    found = run()
    savings = {(r.kind, r.team, r.subject): r.monthly_saving_nano for r in found}
    assert savings == {
        # Cache: 30 sampled fingerprints, 11 distinct: 19/30 duplicates. Of alpha's 50 requests
        # to big (no hits), 19/30 * 50 = 31.67 could be answered from the cache, at the average
        # miss cost (30 * 3.5 + 20 * 53 = 1,165 mUSD over 50 = 23.3 mUSD) and a hit costs
        # nothing: 95/3 * 23,300,000 = 737,833,333.3 nano.
        ("enable_cache", "alpha", "big"): 737_833_333,
        # Tier: the 30 short requests (6,000 prompt, 1,500 completion tokens) cost 105 mUSD on
        # big and 6,000 * 1 + 1,500 * 2 = 9,000 per 1M = 9 mUSD on small (the cheapest model
        # that is cheaper per input and output token; the embedding model does not count).
        ("tier_short_requests", "alpha", "big"): 105_000_000 - 9_000_000,
        # Prompt caching: 20 long requests, 16 sharing a prefix of 5 distinct: 15/20 repeat.
        # 15/20 * 20 * 1,024 tokens = 15,360 tokens at 10 - 5 = 5 USD per 1M less: 76.8 mUSD.
        ("prompt_caching", "alpha", "big"): 76_800_000,
        # Batch API: the nightly workload's 10 mUSD at half price.
        ("batch_api", "beta", "nightly"): 5_000_000,
        # The experiment spent 2 + 2 mUSD after 50 quiet days.
        ("stale_experiment", "gamma", "experiment=exp1"): 4_000_000,
        # Hygiene, no direct saving: an idle key, teams without budgets, no alert webhook.
        ("idle_key", "gamma", "key_idle"): 0,
        ("no_budget", "alpha", "alpha"): 0,
        ("no_budget", "beta", "beta"): 0,
        ("no_alerts", "*", "alerts.webhooks"): 0,
    }
    assert [r.monthly_saving_nano for r in found] == sorted(
        (r.monthly_saving_nano for r in found), reverse=True
    )
    cache = by_kind(found, "enable_cache")[0]
    assert cache.monthly_saving_usd == Decimal("0.737833333")
    assert cache.to_dict()["monthly_saving_usd"] == "0.737833333"


def test_the_changes_realize_what_they_recommend() -> None:
    found = run()
    tier = by_kind(found, "tier_short_requests")[0]
    assert tier.figures["target_model"] == "small"
    # The proposed tier is a valid config that sends the team's short requests to small.
    proposed = config(CONFIG.replace("cache:\n", tier.change + "cache:\n"))
    rule = proposed.tiers["big"].rules[0]
    assert rule.use == "small"
    assert rule.when.prompt_tokens_lte == 1000
    assert rule.when.team == ("alpha",)
    cache = by_kind(found, "enable_cache")[0]
    assert "enabled: true" in cache.change
    proposed = config(CONFIG.replace("cache:\n  enabled: false\n", cache.change))
    assert proposed.cache.enabled and proposed.cache.policy_for("big").mode == "always"
    budget = by_kind(found, "no_budget")[0]
    proposed = config(CONFIG.replace("  alpha: {}\n", budget.change.removeprefix("teams:\n")))
    assert any(b.team == "alpha" for b in proposed.budgets.rules)


def test_a_route_already_cached_or_tiered_is_not_recommended_again() -> None:
    text = CONFIG.replace(
        "cache:\n  enabled: false\n",
        "cache:\n  routes:\n    big: {mode: always}\n"
        "tiers:\n  cheap: {candidates: [small, big], default: big}\n",
    )
    found = run(config(text))
    assert not by_kind(found, "enable_cache")
    # The tier lists big, so its cheapest candidate is the target: still small.
    assert by_kind(found, "tier_short_requests")[0].figures["target_model"] == "small"


def test_too_little_evidence_concludes_nothing() -> None:
    events = alpha_events()[:15] + alpha_events()[30:35]  # 15 short, 5 long: 20 requests
    data = rollup_data(events, START, END)
    found = recommendations(data, config(), START, END, whole_month=True)
    # 15 sampled fingerprints and 5 sampled prefixes are below MIN_REQUESTS; 15 short of 20
    # requests is "mostly" short, and 20 requests are enough for that.
    assert {r.kind for r in found} == {"tier_short_requests", "no_budget"}


def test_a_partial_period_is_scaled_to_thirty_days() -> None:
    data = rollup_data(beta_events(), START, END)
    days = recommendations(data, config(), date(2026, 11, 1), date(2026, 11, 10))
    # 5 mUSD saved over 10 days is 15 mUSD over 30.
    assert by_kind(days, "batch_api")[0].monthly_saving_nano == 15_000_000


def test_signals_count_successful_first_calls_only() -> None:
    base = {"requested_model": "big", "fingerprint": "0123456789abcdef", "shape": "simple"}
    events = [
        at(date(2026, 11, 5), 1, **base),
        # A cascade's second call of request 1: its cost only, not another request.
        at(date(2026, 11, 5), 1, event_id="req-1:1", cost_nano=7, **base),
        at(date(2026, 11, 5), 2, cache="hit", cost_nano=0, **base),
        at(date(2026, 11, 5), 3, status=500, outcome="error", **base),
        at(date(2026, 11, 5), 4, requested_model="big"),  # no signals recorded
    ]
    data = rollup_data(events, START, END)
    route = data.values("alpha", "signals")["big"]
    assert route["requests"] == 2 and route["hits"] == 1
    assert route["miss_cost"] == 450_000 + 7
    assert route["short"] == 1 and route["short_prompt"] == 100
    assert data.values("alpha", "fingerprint") == {"big|0123456789abcdef": {"n": 2}}


def test_a_key_spending_at_night_on_many_days_is_a_batch_job() -> None:
    def on(day: int, hour: int, n: int, key: str, cost: int) -> SpendEvent:
        ts = int(datetime(2026, 11, day, hour, 0, tzinfo=UTC).timestamp() * 1000)
        return event(n, team="delta", ts_ms=ts, key_id=key, cost_nano=cost)

    events = [
        # A cron job: 02:00 UTC on six days, and once at 14:00: 6 of 6.2 mUSD (97 %) at night.
        *(on(10 + i, 2, i, "key_cron", 1_000_000) for i in range(6)),
        on(10, 14, 6, "key_cron", 200_000),
        # Night traffic on three days only: not steady enough.
        *(on(10 + i, 3, 10 + i, "key_owl", 1_000_000) for i in range(3)),
    ]
    daily = rollup_data(events, START, END)
    hourly = rollup_data(events, START, END, granularity="h")
    found = recommendations(daily, config(), START, END, whole_month=True, hourly=hourly)
    (batch,) = by_kind(found, "batch_api")
    # Half of the night's 6 mUSD.
    assert (batch.subject, batch.monthly_saving_nano) == ("key_cron", 3_000_000)
    assert "6 requests of key key_cron at night (00-06 h UTC)" in batch.evidence
    # Without the hourly rollups, nothing is said about it.
    without = recommendations(daily, config(), START, END, whole_month=True)
    assert not by_kind(without, "batch_api")
