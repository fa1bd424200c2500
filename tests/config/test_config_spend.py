"""Budgets, alerts, shared costs, the spool and the aggregator in YAML: each rule's problem is
reported with its key path and reason, and a valid file compiles to exact nano-USD values."""

from __future__ import annotations

import dataclasses
import hashlib
from types import MappingProxyType

import pytest

from gateway.config.model import (
    AggregatorConfig,
    AlertsConfig,
    Allocation,
    BudgetConfig,
    BudgetsConfig,
    ReviewSchedule,
    StoreConfig,
    Webhook,
)
from gateway.config.schema import ALERT_EVENTS, DEFAULT_THRESHOLDS
from gateway.errors import ConfigError
from tests.config.test_config_schema import PROVIDERS, load, problems, reason_at

MODELS = """\
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
  gpt-4o-mini:
    deployments: [{provider: openai, model: gpt-4o}]
"""
BASE = PROVIDERS + MODELS
SEARCH_KEY = "sk-sg-0123456789abcdef0123"
SEARCH_KEY_ID = "key_" + hashlib.sha256(SEARCH_KEY.encode()).hexdigest()[:12]
TEAMS = f"""\
teams:
  search:
    keys: [{{name: search-prod, key: {SEARCH_KEY}, project: ranking}}]
  support:
    description: Support
"""


def budget_problems(budget: str, *, team: str = "search") -> list[tuple[str, str]]:
    """Problems of a config whose team `team` has the one budget `budget` (a flow mapping)."""
    return problems(BASE + TEAMS.replace(f"  {team}:\n", f"  {team}:\n    budgets: [{budget}]\n"))


def test_a_config_without_the_new_sections_gets_the_runtime_defaults() -> None:
    config = load(BASE + TEAMS)
    assert config.store == StoreConfig()
    assert config.budgets == BudgetsConfig()
    assert config.alerts == AlertsConfig()
    assert config.aggregator == AggregatorConfig()
    assert config.shared_costs == ()
    assert config.shared_spend_allocation == Allocation()
    search = config.teams["search"]
    assert (search.shared, search.revenue_per_request_nano, search.monthly_revenue_nano) == (
        False,
        None,
        None,
    )


def test_schema_defaults_are_the_runtime_defaults() -> None:
    assert Webhook(name="w", url="https://h").events == ALERT_EVENTS
    thresholds = {f.name: f.default for f in dataclasses.fields(BudgetConfig)}["thresholds"]
    assert thresholds == DEFAULT_THRESHOLDS


FULL = f"""\
store:
  url: memory://
  on_unavailable: closed
  spool_dir: /var/lib/sg/spool
  spool_max_bytes: 1048576
  spool_fsync_interval_s: 0.5
teams:
  search:
    description: Search
    revenue: {{per_request_usd: 0.002, monthly_usd: "5000"}}
    keys: [{{name: search-prod, key: {SEARCH_KEY}, project: ranking}}]
    budgets:
      - name: search-monthly
        period: monthly
        limit_usd: 500
        limit_tokens: 100000000
      - name: search-prod-daily
        scope: key
        match: search-prod
        period: daily
        limit_usd: 0.1
        on_exceed: downgrade
        downgrade_to: gpt-4o-mini
        thresholds: [80, 100, 120]
  support:
    revenue: {{monthly_usd: 1000.5}}
  platform:
    shared: true
budgets:
  reservation_ttl_s: 120
  thresholds: [50, 100]
  rules:
    - {{name: ranking-daily, team: search, scope: project, match: ranking, period: daily,
        limit_usd: 20}}
    - {{name: exp-total, team: support, scope: tag, match: experiment=v2, period: total,
        limit_tokens: 5000, on_exceed: alert}}
    - {{name: admin-key, team: support, scope: key, match: key_0123456789ab, period: weekly,
        limit_usd: "12.345678901"}}
alerts:
  cooldown_s: 60
  timeout_s: 2
  webhooks:
    - {{name: finops, url: "https://hooks.slack.com/services/T0/B0/secret"}}
    - {{name: oncall, url: "http://bot.internal/hook/", events: [budget_exceeded]}}
aggregator:
  batch_size: 10000
  block_ms: 250
  claim_idle_s: 30
  archive_dir: /data/archive
  stream_retention_s: 3600
"""
FULL_PRICING = """\
pricing:
  shared_costs:
    - {name: platform-fee, monthly_usd: 2000}
    - {name: vector-db, monthly_usd: 850.25, allocation: fixed, weights: {search: 2, support: 1}}
  shared_spend: {allocation: even, weights: {}}
"""


def test_a_full_spend_setup_compiles_to_exact_runtime_values() -> None:
    config = load(BASE + FULL_PRICING + FULL)
    assert config.store == StoreConfig(
        url="memory://",
        on_unavailable="closed",
        spool_dir="/var/lib/sg/spool",
        spool_max_bytes=1048576,
        spool_fsync_interval_s=0.5,
    )
    search, support, platform = (config.teams[t] for t in ("search", "support", "platform"))
    assert (search.revenue_per_request_nano, search.monthly_revenue_nano) == (
        2_000_000,
        5_000_000_000_000,
    )
    assert (support.revenue_per_request_nano, support.monthly_revenue_nano) == (
        None,
        1_000_500_000_000,
    )
    assert (search.shared, platform.shared) == (False, True)

    assert config.budgets.reservation_ttl_s == 120
    assert config.budgets.rules == (
        # Team shorthand first (team implied), then the rules; unset thresholds come from
        # budgets.thresholds, and a key name becomes the key's id.
        BudgetConfig(
            "search-monthly", "search", "team", None, "monthly", 500_000_000_000, 100_000_000,
            thresholds=(50, 100),
        ),
        BudgetConfig(
            "search-prod-daily", "search", "key", SEARCH_KEY_ID, "daily", 100_000_000, None,
            on_exceed="downgrade", downgrade_to="gpt-4o-mini", thresholds=(80, 100, 120),
        ),
        BudgetConfig(
            "ranking-daily", "search", "project", "ranking", "daily", 20_000_000_000, None,
            thresholds=(50, 100),
        ),
        BudgetConfig(
            "exp-total", "support", "tag", "experiment=v2", "total", None, 5000,
            on_exceed="alert", thresholds=(50, 100),
        ),
        BudgetConfig(
            "admin-key", "support", "key", "key_0123456789ab", "weekly", 12_345_678_901, None,
            thresholds=(50, 100),
        ),
    )  # fmt: skip

    finops, oncall = config.alerts.webhooks
    assert (finops.name, finops.events) == ("finops", ALERT_EVENTS)
    assert oncall.url == "http://bot.internal/hook"
    assert oncall.events == ("budget_exceeded",)
    assert (config.alerts.cooldown_s, config.alerts.timeout_s) == (60, 2)
    assert "secret" not in repr(config.alerts)
    assert config.aggregator == AggregatorConfig(10000, 250, 30, "/data/archive", 3600)

    fee, vector = config.shared_costs
    assert (fee.name, fee.monthly_nano, fee.allocation) == (
        "platform-fee",
        2 * 10**12,
        Allocation(),
    )
    assert vector.monthly_nano == 850_250_000_000
    assert vector.allocation == Allocation("fixed", {"search": 2, "support": 1})
    assert isinstance(vector.allocation.weights, MappingProxyType)
    assert config.shared_spend_allocation == Allocation("even", {})


@pytest.mark.parametrize(
    ("written", "nano"),
    [
        ("500", 500_000_000_000),
        ("0.1", 100_000_000),  # exactly, not the binary float's 0.1000000000000000055...
        ("0.000000001", 1),
        ("'12.50'", 12_500_000_000),
        ("'1.500000000000'", 1_500_000_000),  # trailing zeros past nano are exact
        ("1e3", 1_000_000_000_000),
    ],
)
def test_usd_amounts_are_exact_nano_dollars(written: str, nano: int) -> None:
    config = load(BASE + f"teams: {{t: {{revenue: {{monthly_usd: {written}}}}}}}\n")
    assert config.teams["t"].monthly_revenue_nano == nano


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("-1", "must not be negative, got int -1"),
        ("'-0.5'", "must not be negative, got str '-0.5'"),
        (
            "0.0000000001",
            "more than 9 decimals: amounts are kept in whole nano-USD, got float 1e-10",
        ),
        (
            "'1.0000000005'",
            "more than 9 decimals: amounts are kept in whole nano-USD, got str '1.0000000005'",
        ),
        (
            "abc",
            "expected a USD amount (a number, or a decimal string like '12.50'), got str 'abc'",
        ),
        (
            "true",
            "expected a USD amount (a number, or a decimal string like '12.50'), got bool True",
        ),
        (
            ".inf",
            "expected a USD amount (a number, or a decimal string like '12.50'), got float inf",
        ),
        ("1.0e+13", "must be at most 1000000000000, got float 10000000000000.0"),
    ],
)
def test_bad_usd_amounts(written: str, reason: str) -> None:
    found = problems(BASE + f"teams: {{t: {{revenue: {{monthly_usd: {written}}}}}}}\n")
    assert reason_at(found, "teams.t.revenue.monthly_usd") == reason


def test_an_empty_revenue_block_asks_for_an_amount() -> None:
    found = problems(BASE + "teams: {t: {revenue: {}}}\n")
    assert reason_at(found, "teams.t.revenue.per_request_usd") == (
        "give per_request_usd, monthly_usd or both"
    )


@pytest.mark.parametrize(
    ("budget", "path", "reason"),
    [
        ("{name: b, period: daily}", "limit_usd", "give limit_usd, limit_tokens or both"),
        (
            "{name: b, period: daily, limit_usd: 0}",
            "limit_usd",
            "must be greater than 0, got int 0",
        ),
        ("{name: b, period: daily, limit_tokens: 0}", "limit_tokens", "must be at least 1, got 0"),
        (
            "{name: b, period: montly, limit_usd: 1}",
            "period",
            "expected one of 'daily', 'weekly', 'monthly', 'total', got str 'montly' "
            "(did you mean 'monthly'?)",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, scope: user, match: x}",
            "scope",
            "expected one of 'key', 'team', 'project', 'tag', got str 'user'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, match: ranking}",
            "match",
            "only allowed when scope is not 'team' (a team budget covers it all)",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, scope: key}",
            "match",
            "required when scope is 'key': a key id (key_ and 12 hex digits) or the name of one "
            "of the team's keys",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, scope: project}",
            "match",
            "required when scope is 'project': the project name",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, scope: tag, match: experiment}",
            "match",
            "expected key=value when scope is 'tag', got str 'experiment'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, scope: tag, match: '=v2'}",
            "match",
            "expected key=value when scope is 'tag', got str '=v2'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, on_exceed: downgrade}",
            "downgrade_to",
            "required when on_exceed is 'downgrade' (a model under models)",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, downgrade_to: gpt-4o-mini}",
            "downgrade_to",
            "only allowed when on_exceed is 'downgrade', not 'block'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, on_exceed: stop}",
            "on_exceed",
            "expected one of 'block', 'downgrade', 'alert', got str 'stop'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, thresholds: [50, 90, 90]}",
            "thresholds[2]",
            "must be greater than the value before it (90), got 90",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, thresholds: [0, 50]}",
            "thresholds[0]",
            "must be at least 1, got 0",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, thresholds: [50, 1001]}",
            "thresholds[1]",
            "must be at most 1000, got 1001",
        ),
        (
            "{name: 'search monthly', period: daily, limit_usd: 1}",
            "name",
            "budget names use only A-Z, a-z, 0-9, _, . and -, got str 'search monthly'",
        ),
        (
            "{name: b, period: daily, limit_usd: 1, team: search}",
            "team",
            "unknown key 'team' (known keys: name, period, limit_usd, limit_tokens, scope, "
            "match, on_exceed, downgrade_to, thresholds)",
        ),
    ],
)
def test_budget_rules(budget: str, path: str, reason: str) -> None:
    found = budget_problems(budget)
    assert reason_at(found, f"teams.search.budgets[0].{path}") == reason
    assert len(found) == 1


def test_budget_names_are_unique_across_teams_and_rules() -> None:
    found = problems(
        BASE
        + TEAMS.replace(
            "  support:", "    budgets: [{name: b1, period: daily, limit_usd: 1}]\n  support:"
        )
        + "budgets:\n  rules:\n"
        + "    - {name: b2, team: support, period: daily, limit_usd: 1}\n"
        + "    - {name: b1, team: support, period: weekly, limit_usd: 5}\n"
        + "    - {name: b2, team: search, period: weekly, limit_usd: 5}\n"
    )
    assert found == [
        ("budgets.rules[1].name", "duplicate budget name 'b1' (also teams.search.budgets[0])"),
        ("budgets.rules[2].name", "duplicate budget name 'b2' (also budgets.rules[0])"),
    ]


def test_a_rule_names_a_defined_team() -> None:
    found = problems(
        BASE + TEAMS + "budgets: {rules: [{name: b, team: serch, period: daily, limit_usd: 1}]}\n"
    )
    assert found == [
        ("budgets.rules[0].team", "team 'serch' is not defined in teams (did you mean 'search'?)")
    ]
    found = problems(BASE + "budgets: {rules: [{name: b, team: x, period: daily, limit_usd: 1}]}\n")
    assert found == [("budgets.rules[0].team", "team 'x' is not defined in teams (defined: none)")]


def test_a_rule_needs_its_team() -> None:
    found = problems(BASE + TEAMS + "budgets: {rules: [{name: b, period: daily, limit_usd: 1}]}\n")
    assert found == [("budgets.rules[0].team", "required key is missing")]


def test_downgrade_to_names_a_configured_model() -> None:
    found = budget_problems(
        "{name: b, period: daily, limit_usd: 1, on_exceed: downgrade, downgrade_to: gpt4o-mini}"
    )
    assert found == [
        (
            "teams.search.budgets[0].downgrade_to",
            "model 'gpt4o-mini' is not defined in models (did you mean 'gpt-4o-mini'?)",
        )
    ]


def test_a_key_budget_resolves_key_names_of_its_own_team() -> None:
    base = "{name: b, period: daily, limit_usd: 1, scope: key, match: %s}"
    found = budget_problems(base % "search-prd")
    assert found == [
        (
            "teams.search.budgets[0].match",
            "no key named 'search-prd' in teams.search.keys (did you mean 'search-prod'?); "
            "give a key name from there or a key id (key_ and 12 hex digits)",
        )
    ]
    # Another team's key name is not looked up; its id is refused for this team.
    found = budget_problems(base % "search-prod", team="support")
    assert found == [
        (
            "teams.support.budgets[0].match",
            "no key named 'search-prod' in teams.support.keys; "
            "give a key name from there or a key id (key_ and 12 hex digits)",
        )
    ]
    found = budget_problems(base % SEARCH_KEY_ID, team="support")
    assert found == [
        (
            "teams.support.budgets[0].match",
            f"key '{SEARCH_KEY_ID}' is declared in team 'search', not 'support'",
        )
    ]


def test_a_key_name_shared_by_two_keys_is_ambiguous() -> None:
    text = BASE + TEAMS.replace(
        "project: ranking}]",
        "project: ranking}, {name: search-prod, key: sk-sg-0123456789abcdef9999}]\n"
        "    budgets: [{name: b, period: daily, limit_usd: 1, scope: key, match: search-prod}]",
    )
    assert problems(text) == [
        (
            "teams.search.budgets[0].match",
            "2 keys of team 'search' are named 'search-prod': give the key id",
        )
    ]


def test_a_broken_key_adds_no_second_problem_to_a_budget_naming_it() -> None:
    text = BASE + (
        "teams:\n  t:\n    keys: [{name: k, key: too-short}]\n"
        "    budgets: [{name: b, period: daily, limit_usd: 1, scope: key, match: k}]\n"
    )
    assert [path for path, _ in problems(text)] == ["teams.t.keys[0].key"]


def test_at_least_one_team_is_not_shared() -> None:
    found = problems(BASE + "teams: {a: {shared: true}, b: {shared: true}}\n")
    assert found == [
        ("teams", "every team is shared: at least one must not be, to carry the shared spend")
    ]
    found = problems(BASE + "pricing: {shared_costs: [{name: fee, monthly_usd: 1}]}\n")
    assert found == [
        (
            "pricing.shared_costs",
            "no team to allocate shared costs to: define a non-shared team under teams",
        )
    ]


def test_allocation_weights_only_and_always_with_fixed() -> None:
    found = problems(
        BASE
        + TEAMS
        + """\
pricing:
  shared_costs:
    - {name: a, monthly_usd: 1, allocation: fixed}
    - {name: b, monthly_usd: 1, weights: {search: 1}}
    - {name: c, monthly_usd: 1, allocation: evenly}
  shared_spend: {allocation: even, weights: {search: 1}}
"""
    )
    assert found == [
        (
            "pricing.shared_costs[0].weights",
            "required when allocation is 'fixed': a weight for every non-shared team",
        ),
        (
            "pricing.shared_costs[1].weights",
            "only used when allocation is 'fixed', not 'proportional'",
        ),
        (
            "pricing.shared_costs[2].allocation",
            "expected one of 'proportional', 'even', 'fixed', got str 'evenly' "
            "(did you mean 'even'?)",
        ),
        ("pricing.shared_spend.weights", "only used when allocation is 'fixed', not 'even'"),
    ]


def test_a_broken_shared_cost_section_keeps_the_price_overrides() -> None:
    found = problems(
        PROVIDERS
        + "models: {llama: {deployments: [{provider: openai, model: llama-3.1-70b}]}}\n"
        + "pricing:\n"
        + "  overrides: {llama-3.1-70b: {input_per_1m: 0.59, output_per_1m: 0.79}}\n"
        + "  shared_costs: {name: fee}\n"
        + "  shared_spend: {allocation: evenly}\n"
    )
    assert [path for path, _ in found] == [
        "pricing.shared_costs",
        "pricing.shared_spend.allocation",
    ]


def test_fixed_weights_cover_exactly_the_non_shared_teams() -> None:
    teams = TEAMS + "  platform: {shared: true}\n  research: {}\n"
    found = problems(
        BASE
        + teams
        + """\
pricing:
  shared_costs:
    - {name: fee, monthly_usd: 1, allocation: fixed, weights: {search: 2, serch: 1, platform: 1}}
    - {name: fee, monthly_usd: 2}
    - {name: db, monthly_usd: 1, allocation: fixed, weights: {search: 0}}
  shared_spend:
    allocation: fixed
    weights: {search: 1, support: 1, research: 1}
"""
    )
    assert found == [
        (
            "pricing.shared_costs[0].weights.serch",
            "team 'serch' is not defined in teams (did you mean 'search'?)",
        ),
        (
            "pricing.shared_costs[0].weights.platform",
            "team 'platform' is shared: its own spend is allocated, it takes no share",
        ),
        (
            "pricing.shared_costs[0].weights",
            "no weight for support, research: with allocation 'fixed' every non-shared team "
            "needs one",
        ),
        (
            "pricing.shared_costs[1].name",
            "duplicate shared cost name 'fee' (also pricing.shared_costs[0])",
        ),
        ("pricing.shared_costs[2].weights.search", "must be at least 1, got 0"),
    ]


def test_webhook_rules() -> None:
    found = problems(
        BASE
        + """\
alerts:
  webhooks:
    - {name: a, url: "https://h/x", events: [budget_exceded]}
    - {name: b, url: "https://h/x", events: [budget_threshold, budget_threshold]}
    - {name: c, url: "https://h/x", events: []}
    - {name: d}
    - {name: ok, url: "https://h/y"}
    - {name: ok, url: "https://h/z"}
"""
    )
    assert found == [
        (
            "alerts.webhooks[0].events[0]",
            "expected one of 'budget_threshold', 'budget_exceeded', 'budget_forecast', "
            "'anomaly', 'review', got str 'budget_exceded' (did you mean 'budget_exceeded'?)",
        ),
        ("alerts.webhooks[1].events[1]", "'budget_threshold' is listed twice"),
        ("alerts.webhooks[2].events", "must list at least one event"),
        ("alerts.webhooks[3].url", "required key is missing"),
        ("alerts.webhooks[5].name", "duplicate webhook name 'ok' (also alerts.webhooks[4])"),
    ]


SECRET = "T0-B0-Very-Secret-Token-0042"


def test_webhook_urls_are_never_printed() -> None:
    text = BASE + (
        "alerts:\n  webhooks:\n"
        f"    - {{name: a, url: 'hooks.slack.com/services/{SECRET}'}}\n"
        "    - {name: b, url: '${HOOK}'}\n"
        f"    - {{name: c, url: 'ftp://x/{SECRET}', evnts: []}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(text, {"HOOK": f"slack/{SECRET}"})
    rendered = info.value.render() + repr(info.value.problems)
    assert len(info.value.problems) == 4
    assert SECRET not in rendered
    assert "a value from ${HOOK}" in rendered


@pytest.mark.parametrize(
    ("section", "path", "reason"),
    [
        (
            "store: {on_unavailable: fail}",
            "store.on_unavailable",
            "expected one of 'open', 'closed', got str 'fail'",
        ),
        ("store: {spool_max_bytes: 0}", "store.spool_max_bytes", "must be at least 1, got 0"),
        (
            "store: {spool_fsync_interval_s: 0}",
            "store.spool_fsync_interval_s",
            "must be greater than 0, got int 0",
        ),
        (
            "budgets: {reservation_ttl_s: 0}",
            "budgets.reservation_ttl_s",
            "must be greater than 0, got int 0",
        ),
        (
            "budgets: {thresholds: [90, 50]}",
            "budgets.thresholds[1]",
            "must be greater than the value before it (90), got 50",
        ),
        (
            "aggregator: {batch_size: 10001}",
            "aggregator.batch_size",
            "must be at most 10000, got 10001",
        ),
        ("aggregator: {block_ms: 0}", "aggregator.block_ms", "must be at least 1, got 0"),
        ("alerts: {timeout_s: 0}", "alerts.timeout_s", "must be greater than 0, got int 0"),
        ("alerts: {cooldown_s: -1}", "alerts.cooldown_s", "must be at least 0, got -1"),
        (
            "aggregator: {archive_dir: 7}",
            "aggregator.archive_dir",
            "expected a string, got int 7 (quote it in YAML to make it text)",
        ),
        (
            "aggregator: {batch_sise: 5}",
            "aggregator.batch_sise",
            "unknown key 'batch_sise' (did you mean 'batch_size'?)",
        ),
    ],
)
def test_store_budgets_and_aggregator_settings(section: str, path: str, reason: str) -> None:
    assert problems(BASE + section + "\n") == [(path, reason)]


def test_an_empty_threshold_list_turns_threshold_alerts_off() -> None:
    config = load(
        BASE
        + TEAMS
        + "budgets:\n  thresholds: []\n"
        + "  rules: [{name: b, team: search, period: daily, limit_usd: 1}]\n"
    )
    assert config.budgets.rules[0].thresholds == ()


def test_budget_problems_carry_their_line() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            BASE
            + TEAMS
            + "budgets:\n  rules:\n    - name: b\n      team: search\n      period: daily\n"
            + "      limit_usd: -3\n"
        )
    assert info.value.problems == [
        ("budgets.rules[0].limit_usd", "must not be negative, got int -3 (line 25)")
    ]


def test_business_units_compile_and_are_checked() -> None:
    config = load(BASE + "teams: {t: {units: {name: orders, monthly: 120000}}}\n")
    assert (config.teams["t"].units_name, config.teams["t"].monthly_units) == ("orders", 120000)
    assert reason_at(
        problems(BASE + "teams: {t: {units: {name: orders, monthly: 0}}}\n"),
        "teams.t.units.monthly",
    )
    assert reason_at(problems(BASE + "teams: {t: {units: {monthly: 5}}}\n"), "teams.t.units.name")


def test_the_review_schedule_compiles_and_is_checked() -> None:
    config = load(BASE + "alerts: {review: {weekday: friday, hour_utc: 16}}\n")
    assert config.alerts.review == ReviewSchedule(4, 16)
    assert load(BASE + "alerts: {review: {}}\n").alerts.review == ReviewSchedule(0, 9)
    assert load(BASE).alerts.review is None
    found = problems(BASE + "alerts: {review: {weekday: fri, hour_utc: 24}}\n")
    assert "monday" in reason_at(found, "alerts.review.weekday")
    assert reason_at(found, "alerts.review.hour_utc")


def test_a_budget_hashes_and_compares_by_its_settings() -> None:
    # Its hash is computed once (a request's budgets key its lease and its settle): it must
    # still follow every setting, and equal budgets from two loads of a config must match.
    budget = BudgetConfig("b", "alpha", "team", None, "monthly", 10**9, None)
    again = BudgetConfig("b", "alpha", "team", None, "monthly", 10**9, None)
    assert budget == again and hash(budget) == hash(again) and len({budget, again}) == 1
    for name, value in (("limit_nano", 2 * 10**9), ("thresholds", (80,)), ("period", "daily")):
        changed = dataclasses.replace(budget, **{name: value})
        assert changed != budget and hash(changed) != hash(budget), name
    assert "_hash" not in repr(budget)
    assert [f.name for f in dataclasses.fields(BudgetConfig) if f.compare][-1] == "source"
