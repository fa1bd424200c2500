"""Tiers, cascades, the response cache, coalescing, embeddings batching and prompt caps in YAML:
each rule's problem is reported with its key path and reason, and a valid file compiles to the
runtime values the optimizers read."""

from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType
from typing import Any

import pytest

from gateway.config.loader import load_config
from gateway.config.model import (
    BatchingConfig,
    CacheConfig,
    CacheRoutePolicy,
    CascadeConfig,
    TierCondition,
    TierConfig,
    TierRule,
)
from gateway.config.schema import (
    BatchingSpec,
    CacheRouteSpec,
    CacheSpec,
    CascadeSpec,
    EmbeddingsBatchingSpec,
    TierConditionSpec,
)
from gateway.errors import ConfigError
from tests.config.test_config_loader import EXAMPLE, EXAMPLE_ENV
from tests.config.test_config_schema import PROVIDERS, load, problems, reason_at

MODELS = """\
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
  gpt-4o-mini:
    deployments: [{provider: openai, model: gpt-4o}]
  o3:
    deployments: [{provider: openai, model: gpt-4o}]
"""
TEAMS = """\
teams:
  search: {}
  support: {}
"""
BASE = PROVIDERS + MODELS + TEAMS


def tier_problems(tier: str, *, name: str = "auto") -> list[tuple[str, str]]:
    """Problems of a config whose one tier `name` is `tier` (a flow mapping)."""
    return problems(BASE + f"tiers:\n  {name}: {tier}\n")


def rule_problems(when: str) -> list[tuple[str, str]]:
    """Problems of a tier whose one rule has the conditions `when` (a flow mapping)."""
    return tier_problems(
        f"{{candidates: [gpt-4o-mini, gpt-4o], default: gpt-4o-mini, "
        f"rules: [{{name: r, use: gpt-4o, when: {when}}}]}}"
    )


def test_a_config_without_the_optimizer_sections_gets_the_runtime_defaults() -> None:
    config = load(BASE)
    assert config.tiers == {}
    assert isinstance(config.tiers, MappingProxyType)
    assert config.cache == CacheConfig()
    assert config.batching == BatchingConfig()
    route = config.models["gpt-4o"]
    assert (route.max_tokens_cap, route.max_prompt_tokens) == (None, None)


@pytest.mark.parametrize(
    ("spec", "runtime"),
    [
        (TierConditionSpec(), TierCondition()),
        (CascadeSpec(), CascadeConfig()),
        (CacheRouteSpec(), CacheRoutePolicy()),
    ],
)
def test_schema_defaults_are_the_runtime_defaults(spec: Any, runtime: Any) -> None:
    assert dataclasses.asdict(spec) == dataclasses.asdict(runtime)


def test_cache_and_batching_schema_defaults_are_the_runtime_defaults() -> None:
    cache = dataclasses.asdict(CacheSpec())
    assert cache == {**dataclasses.asdict(CacheConfig()), "routes": {}}
    batching, embeddings = BatchingSpec(), EmbeddingsBatchingSpec()
    assert BatchingConfig() == BatchingConfig(
        coalesce=batching.coalesce,
        coalesce_billing=batching.coalesce_billing,
        embeddings_enabled=embeddings.enabled,
        embeddings_window_s=embeddings.window_ms / 1000,
        embeddings_max_inputs=embeddings.max_inputs,
    )


FULL = """\
tiers:
  auto:
    candidates: [gpt-4o-mini, gpt-4o, o3]
    default: gpt-4o-mini
    rules:
      - name: budget-saver
        use: gpt-4o-mini
        when: {budget_used_pct_gte: 90}
      - name: premium-hint
        use: o3
        when: {hint: premium}
      - name: mid
        use: gpt-4o
        when: {prompt_tokens_gt: 4000, prompt_tokens_lte: 32000, hint: [economy, standard]}
      - name: support-tools
        use: gpt-4o
        when:
          team: support
          project: [helpdesk, triage]
          environment: prod
          has_tools: true
          has_response_format: false
          has_code: false
          messages_gt: 4
      - name: everything-else
        use: gpt-4o-mini
    cascade:
      checks: [length, empty]
      stream: true
  gpt-4o:
    candidates: [gpt-4o-mini, gpt-4o]
    default: gpt-4o
    cascade: {}
cache:
  enabled: false
  memory_max_bytes: 0
  max_entry_bytes: 2048
  use_redis: true
  default_ttl_s: 60
  hit_cost_fraction: 0.25
  routes:
    gpt-4o-mini: {mode: always, ttl_s: 600, shared: true}
    auto: {mode: off}
    o3: {}
batching:
  coalesce: false
  coalesce_billing: split
  embeddings: {enabled: true, window_ms: 2.5, max_inputs: 2048}
"""


def test_a_full_optimizer_setup_compiles_to_exact_runtime_values() -> None:
    config = load(BASE + FULL)
    assert config.tiers == {
        "auto": TierConfig(
            name="auto",
            candidates=("gpt-4o-mini", "gpt-4o", "o3"),
            default="gpt-4o-mini",
            rules=(
                TierRule("budget-saver", "gpt-4o-mini", TierCondition(budget_used_pct_gte=90)),
                TierRule("premium-hint", "o3", TierCondition(hint=("premium",))),
                TierRule(
                    "mid",
                    "gpt-4o",
                    TierCondition(
                        prompt_tokens_gt=4000,
                        prompt_tokens_lte=32000,
                        hint=("economy", "standard"),
                    ),
                ),
                TierRule(
                    "support-tools",
                    "gpt-4o",
                    TierCondition(
                        team=("support",),
                        project=("helpdesk", "triage"),
                        environment=("prod",),
                        has_tools=True,
                        has_response_format=False,
                        has_code=False,
                        messages_gt=4,
                    ),
                ),
                TierRule("everything-else", "gpt-4o-mini", TierCondition()),
            ),
            cascade=CascadeConfig(checks=("length", "empty"), stream=True),
        ),
        # A tier may carry the name of a model it tiers; an empty cascade takes the defaults.
        "gpt-4o": TierConfig(
            "gpt-4o", ("gpt-4o-mini", "gpt-4o"), "gpt-4o", cascade=CascadeConfig()
        ),
    }
    assert isinstance(config.tiers, MappingProxyType)
    assert config.cache == CacheConfig(
        enabled=False,
        memory_max_bytes=0,
        max_entry_bytes=2048,
        use_redis=True,
        default_ttl_s=60,
        hit_cost_fraction=0.25,
        routes={
            "gpt-4o-mini": CacheRoutePolicy("always", 600, shared=True),
            "auto": CacheRoutePolicy("off"),  # an unquoted `off` is YAML's false
            "o3": CacheRoutePolicy(),
        },
    )
    assert isinstance(config.cache.routes, MappingProxyType)
    assert config.cache.ttl_for(config.cache.policy_for("o3")) == 60
    assert config.batching == BatchingConfig(
        coalesce=False,
        coalesce_billing="split",
        embeddings_enabled=True,
        embeddings_window_s=0.0025,
        embeddings_max_inputs=2048,
    )


def test_prompt_caps_compile_onto_the_model_route() -> None:
    config = load(
        BASE.replace("  o3:\n", "  o3:\n    max_tokens_cap: 4096\n    max_prompt_tokens: 100000\n")
    )
    route = config.models["o3"]
    assert (route.max_tokens_cap, route.max_prompt_tokens) == (4096, 100000)


@pytest.mark.parametrize("key", ["max_tokens_cap", "max_prompt_tokens"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be at least 1, got 0"),
        ("4k", "expected an integer, got str '4k'"),
        ("1.5", "expected an integer, got float 1.5"),
    ],
)
def test_prompt_caps_are_positive_integers(key: str, value: str, reason: str) -> None:
    found = problems(BASE.replace("  o3:\n", f"  o3:\n    {key}: {value}\n"))
    assert found == [(f"models.o3.{key}", reason)]


def test_max_tokens_cap_typo_is_caught() -> None:
    found = problems(BASE.replace("  o3:\n", "  o3:\n    max_token_cap: 1\n"))
    assert found == [
        ("models.o3.max_token_cap", "unknown key 'max_token_cap' (did you mean 'max_tokens_cap'?)")
    ]


TWO = "candidates: [gpt-4o-mini, gpt-4o], default: gpt-4o-mini"


@pytest.mark.parametrize(
    ("tier", "path", "reason"),
    [
        ("{default: gpt-4o}", "candidates", "required key is missing"),
        ("{candidates: [gpt-4o]}", "default", "required key is missing"),
        ("{candidates: [], default: gpt-4o}", "candidates", "must list at least one candidate"),
        (
            "{candidates: gpt-4o, default: gpt-4o}",
            "candidates",
            "expected a list, got str 'gpt-4o'",
        ),
        (
            "{candidates: [gpt-4o, gpt-4o-mini, gpt-4o], default: gpt-4o}",
            "candidates[2]",
            "'gpt-4o' is listed twice",
        ),
        (
            "{candidates: [gpt-4o-mini, gpt-4o], default: gpt-4o-mni}",
            "default",
            "'gpt-4o-mni' is not one of the candidates (gpt-4o-mini, gpt-4o) "
            "(did you mean 'gpt-4o-mini'?)",
        ),
        (
            "{candidates: [gpt-4o-mini, gpt-4o], default: o3}",
            "default",
            "'o3' is not one of the candidates (gpt-4o-mini, gpt-4o)",
        ),
        (
            f"{{{TWO}, rules: [{{name: r, use: o3}}]}}",
            "rules[0].use",
            "'o3' is not one of the candidates (gpt-4o-mini, gpt-4o)",
        ),
        (f"{{{TWO}, rules: [{{use: gpt-4o}}]}}", "rules[0].name", "required key is missing"),
        (f"{{{TWO}, rules: [{{name: r}}]}}", "rules[0].use", "required key is missing"),
        (
            f"{{{TWO}, rules: [{{name: 'long prompt', use: gpt-4o}}]}}",
            "rules[0].name",
            "rule names use only A-Z, a-z, 0-9, _, . and -, got str 'long prompt'",
        ),
        (
            f"{{{TWO}, rules: [{{name: r, use: gpt-4o, if: {{}}}}]}}",
            "rules[0].if",
            "unknown key 'if' (known keys: name, use, when)",
        ),
        (f"{{{TWO}, rules: {{name: r}}}}", "rules", "expected a list, got mapping"),
        (
            "{candidates: [gpt-4o], default: gpt-4o, cascade: {}}",
            "cascade",
            "needs at least two candidates, to escalate from one to the next",
        ),
        (f"{{{TWO}, cascade: {{checks: []}}}}", "cascade.checks", "must list at least one check"),
        (
            f"{{{TWO}, cascade: {{checks: [length, refusl]}}}}",
            "cascade.checks[1]",
            "expected one of 'length', 'invalid_json', 'empty', 'refusal', got str 'refusl' "
            "(did you mean 'refusal'?)",
        ),
        (
            f"{{{TWO}, cascade: {{checks: [empty, empty]}}}}",
            "cascade.checks[1]",
            "'empty' is listed twice",
        ),
        (
            f"{{{TWO}, cascade: {{stream: sometimes}}}}",
            "cascade.stream",
            "expected true or false, got str 'sometimes'",
        ),
        (
            f"{{{TWO}, cascade: {{stream: false, check: [length]}}}}",
            "cascade.check",
            "unknown key 'check' (did you mean 'checks'?)",
        ),
        (f"{{{TWO}, cascade: [length]}}", "cascade", "expected a mapping, got list"),
        (f"{{{TWO}, default_model: gpt-4o}}", "default_model", "unknown key 'default_model'"),
    ],
)
def test_tier_rules(tier: str, path: str, reason: str) -> None:
    found = tier_problems(tier)
    assert reason_at(found, f"tiers.auto.{path}").startswith(reason)
    assert len(found) == 1, found


@pytest.mark.parametrize(
    ("when", "path", "reason"),
    [
        (
            "{hint: premum}",
            "hint",
            "expected one of 'economy', 'standard', 'premium', got str 'premum' "
            "(did you mean 'premium'?)",
        ),
        (
            "{hint: [economy, cheap]}",
            "hint[1]",
            "expected one of 'economy', 'standard', 'premium', got str 'cheap'",
        ),
        ("{hint: []}", "hint", "must list at least one hint"),
        ("{hint: [premium, premium]}", "hint[1]", "'premium' is listed twice"),
        ("{project: []}", "project", "must list at least one project"),
        ("{project: ''}", "project", "must not be empty"),
        (
            "{environment: [prod, 1]}",
            "environment[1]",
            "expected a string, got int 1 (quote it in YAML to make it text)",
        ),
        ("{team: {search: 1}}", "team", "expected a string, got mapping"),
        ("{prompt_tokens_gt: -1}", "prompt_tokens_gt", "must be at least 0, got -1"),
        ("{prompt_tokens_lte: 4k}", "prompt_tokens_lte", "expected an integer, got str '4k'"),
        (
            "{prompt_tokens_gt: 4000, prompt_tokens_lte: 4000}",
            "prompt_tokens_lte",
            "must be greater than prompt_tokens_gt (4000), got 4000: no prompt could match",
        ),
        (
            "{budget_used_pct_gte: 0}",
            "budget_used_pct_gte",
            "must be greater than 0, got int 0",
        ),
        (
            "{budget_used_pct_gte: 1001}",
            "budget_used_pct_gte",
            "must be at most 1000, got 1001",
        ),
        (
            "{budget_used_pct_gte: 90%}",
            "budget_used_pct_gte",
            "expected a number, got str '90%'",
        ),
        ("{has_tools: maybe}", "has_tools", "expected true or false, got str 'maybe'"),
        ("{has_response_format: 1}", "has_response_format", "expected true or false, got int 1"),
        ("{has_code: null, messages_gt: -2}", "messages_gt", "must be at least 0, got -2"),
        (
            "{prompt_token_gt: 10}",
            "prompt_token_gt",
            "unknown key 'prompt_token_gt' (did you mean 'prompt_tokens_gt'?)",
        ),
        ("[premium]", "", "expected a mapping, got list"),
    ],
)
def test_tier_rule_conditions(when: str, path: str, reason: str) -> None:
    found = rule_problems(when)
    where = "tiers.auto.rules[0].when" + (f".{path}" if path else "")
    assert found == [(where, reason)]


def test_a_single_value_stands_for_a_one_item_list() -> None:
    config = load(
        BASE
        + "tiers:\n  auto:\n    candidates: [gpt-4o]\n    default: gpt-4o\n    rules:\n"
        + "      - {name: r, use: gpt-4o, when: {hint: economy, team: search, project: p}}\n"
    )
    (rule,) = config.tiers["auto"].rules
    assert (rule.when.hint, rule.when.team, rule.when.project) == (
        ("economy",),
        ("search",),
        ("p",),
    )


def test_candidates_are_defined_models_never_tiers() -> None:
    found = problems(
        BASE
        + """\
tiers:
  auto:
    candidates: [gpt-4o-mni, smart, o4]
    default: o4
  smart:
    candidates: [gpt-4o-mini, gpt-4o]
    default: gpt-4o
"""
    )
    assert found == [
        (
            "tiers.auto.candidates[0]",
            "model 'gpt-4o-mni' is not defined in models (did you mean 'gpt-4o-mini'?)",
        ),
        (
            "tiers.auto.candidates[1]",
            "'smart' is a tier: candidates are models (under models), tiers don't nest",
        ),
        (
            "tiers.auto.candidates[2]",
            "model 'o4' is not defined in models (defined: gpt-4o, gpt-4o-mini, o3)",
        ),
    ]


def test_a_tier_named_after_a_model_must_tier_that_model() -> None:
    found = tier_problems("{candidates: [gpt-4o-mini, o3], default: gpt-4o-mini}", name="gpt-4o")
    assert found == [
        (
            "tiers.gpt-4o",
            "tier 'gpt-4o' has the name of a model it does not tier: list 'gpt-4o' in its "
            "candidates, or give the tier another name",
        )
    ]
    config = load(BASE + "tiers:\n  gpt-4o: {candidates: [gpt-4o-mini, gpt-4o], default: gpt-4o}\n")
    assert config.tiers["gpt-4o"].candidates == ("gpt-4o-mini", "gpt-4o")
    assert "gpt-4o" in config.models  # still the candidate the tier sends requests to


def test_rule_names_are_unique_within_a_tier() -> None:
    rules = "[{name: r, use: gpt-4o, when: {hint: premium}}, {name: r, use: gpt-4o-mini}]"
    found = problems(
        BASE
        + f"tiers:\n  auto: {{{TWO}, rules: {rules}}}\n"
        + f"  other: {{{TWO}, rules: [{{name: r, use: gpt-4o}}]}}\n"  # another tier: fine
    )
    assert found == [
        ("tiers.auto.rules[1].name", "duplicate rule name 'r' (also tiers.auto.rules[0])")
    ]


def test_a_rule_after_one_without_conditions_never_applies() -> None:
    found = tier_problems(
        f"{{{TWO}, rules: [{{name: all, use: gpt-4o}}, {{name: late, use: gpt-4o-mini, "
        "when: {hint: economy}}, {name: later, use: gpt-4o, when: {}}]}"
    )
    reason = (
        "never applies: rule 'all' before it has no conditions, so it takes every request "
        "(the first rule that matches wins)"
    )
    assert found == [("tiers.auto.rules[1]", reason), ("tiers.auto.rules[2]", reason)]


def test_team_conditions_name_defined_teams() -> None:
    found = rule_problems("{team: serch}")
    assert found == [
        (
            "tiers.auto.rules[0].when.team",
            "team 'serch' is not defined in teams (did you mean 'search'?)",
        )
    ]
    found = rule_problems("{team: [search, billing]}")
    assert found == [
        (
            "tiers.auto.rules[0].when.team[1]",
            "team 'billing' is not defined in teams (defined: search, support)",
        )
    ]


def test_a_broken_model_or_team_adds_no_second_problem_where_a_tier_names_it() -> None:
    found = problems(
        PROVIDERS
        + MODELS.replace("  o3:\n", "  o3:\n    retries: -1\n")
        + "teams: {'bad team': {}}\n"
        + "tiers:\n  auto:\n    candidates: [gpt-4o, o3]\n    default: o3\n"
        + "    rules: [{name: r, use: gpt-4o, when: {team: 'bad team'}}]\n"
    )
    assert [path for path, _ in found] == ["models.o3.retries", "teams.bad team"]


def test_a_broken_rule_keeps_the_tier_out_but_reports_only_itself() -> None:
    found = tier_problems(f"{{{TWO}, rules: [{{name: r, use: gpt-4o, when: {{hint: top}}}}]}}")
    assert [path for path, _ in found] == ["tiers.auto.rules[0].when.hint"]


@pytest.mark.parametrize(
    ("cache", "path", "reason"),
    [
        (
            "{routes: {gpt4o-mini: {mode: always}}}",
            "routes.gpt4o-mini",
            "model 'gpt4o-mini' is not defined in models or tiers (did you mean 'gpt-4o-mini'?)",
        ),
        (
            "{routes: {gpt-4o: {mode: alway}}}",
            "routes.gpt-4o.mode",
            "expected one of 'deterministic', 'always', 'off', got str 'alway' "
            "(did you mean 'always'?)",
        ),
        (
            "{routes: {gpt-4o: {mode: on}}}",
            "routes.gpt-4o.mode",
            "expected one of 'deterministic', 'always', 'off', got bool True",
        ),
        (
            "{routes: {gpt-4o: {mode: off, ttl_s: 60}}}",
            "routes.gpt-4o.ttl_s",
            "not used when mode is 'off' (nothing is cached)",
        ),
        (
            "{routes: {gpt-4o: {mode: 'off', shared: true}}}",
            "routes.gpt-4o.shared",
            "not used when mode is 'off' (nothing is cached)",
        ),
        (
            "{routes: {gpt-4o: {ttl_s: 0}}}",
            "routes.gpt-4o.ttl_s",
            "must be greater than 0, got int 0",
        ),
        (
            "{routes: {gpt-4o: {shared: yes please}}}",
            "routes.gpt-4o.shared",
            "expected true or false, got str 'yes please'",
        ),
        (
            "{routes: {gpt-4o: {ttl: 60}}}",
            "routes.gpt-4o.ttl",
            "unknown key 'ttl' (did you mean 'ttl_s'?)",
        ),
        ("{routes: [gpt-4o]}", "routes", "expected a mapping, got list"),
        ("{enabled: maybe}", "enabled", "expected true or false, got str 'maybe'"),
        ("{memory_max_bytes: -1}", "memory_max_bytes", "must be at least 0, got -1"),
        ("{max_entry_bytes: 0}", "max_entry_bytes", "must be at least 1, got 0"),
        ("{default_ttl_s: 0}", "default_ttl_s", "must be greater than 0, got int 0"),
        ("{hit_cost_fraction: 1.5}", "hit_cost_fraction", "must be at most 1, got 1.5"),
        ("{hit_cost_fraction: -0.1}", "hit_cost_fraction", "must be at least 0, got -0.1"),
        (
            "{memory_max_bytes: 0, use_redis: false}",
            "use_redis",
            "with memory_max_bytes 0 the cache would keep nothing: set use_redis: true, "
            "memory_max_bytes above 0, or enabled: false",
        ),
        ("{ttl_s: 60}", "ttl_s", "unknown key 'ttl_s'"),
        ("{redis_max_bytes: 0}", "redis_max_bytes", "must be at least 1, got 0"),
        (
            "{redis_max_bytes: 16000000}",
            "redis_max_bytes",
            "must be at least 16 x max_entry_bytes (16777216): the level is split into 16 "
            "shards, each holding entries up to max_entry_bytes",
        ),
        (
            "{redis_max_bytes: 1600, max_entry_bytes: 101}",
            "redis_max_bytes",
            "must be at least 16 x max_entry_bytes (1616)",
        ),
    ],
)
def test_cache_rules(cache: str, path: str, reason: str) -> None:
    found = problems(BASE + f"cache: {cache}\n")
    assert len(found) == 1, found
    assert reason_at(found, f"cache.{path}").startswith(reason)


def test_the_redis_levels_bound_is_read_and_need_not_fit_a_level_that_is_off() -> None:
    assert load(BASE).cache.redis_max_bytes == 256 * 1024 * 1024
    config = load(BASE + "cache: {redis_max_bytes: 1600, max_entry_bytes: 100}\n")
    assert config.cache.redis_max_bytes == 1600
    off = load(BASE + "cache: {redis_max_bytes: 1, use_redis: false}\n")
    assert off.cache.redis_max_bytes == 1 and not off.cache.use_redis


def test_cache_routes_may_name_tiers_including_broken_ones() -> None:
    config = load(BASE + f"tiers: {{auto: {{{TWO}}}}}\ncache: {{routes: {{auto: {{ttl_s: 5}}}}}}\n")
    assert config.cache.policy_for("auto") == CacheRoutePolicy(ttl_s=5)
    assert config.cache.policy_for("gpt-4o") == CacheRoutePolicy()
    found = problems(BASE + "tiers: {auto: {}}\ncache: {routes: {auto: {ttl_s: 5}}}\n")
    assert [path for path, _ in found] == ["tiers.auto.candidates", "tiers.auto.default"]


def test_a_disabled_cache_needs_no_level() -> None:
    config = load(BASE + "cache: {enabled: false, memory_max_bytes: 0, use_redis: false}\n")
    assert (config.cache.enabled, config.cache.memory_max_bytes) == (False, 0)


@pytest.mark.parametrize(
    ("batching", "path", "reason"),
    [
        (
            "{coalesce_billing: splt}",
            "coalesce_billing",
            "expected one of 'first', 'split', got str 'splt' (did you mean 'split'?)",
        ),
        ("{coalesce: 1}", "coalesce", "expected true or false, got int 1"),
        (
            "{embeddings: {window_ms: 0}}",
            "embeddings.window_ms",
            "must be greater than 0, got int 0",
        ),
        (
            "{embeddings: {window_ms: 1001}}",
            "embeddings.window_ms",
            "must be at most 1000, got 1001",
        ),
        ("{embeddings: {max_inputs: 0}}", "embeddings.max_inputs", "must be at least 1, got 0"),
        (
            "{embeddings: {max_inputs: 2049}}",
            "embeddings.max_inputs",
            "must be at most 2048, got 2049",
        ),
        (
            "{embeddings: {window_s: 0.005}}",
            "embeddings.window_s",
            "unknown key 'window_s' (did you mean 'window_ms'?)",
        ),
        ("{embeddings: true}", "embeddings", "expected a mapping, got bool True"),
    ],
)
def test_batching_rules(batching: str, path: str, reason: str) -> None:
    assert problems(BASE + f"batching: {batching}\n") == [(f"batching.{path}", reason)]


def test_the_embeddings_window_is_given_in_milliseconds() -> None:
    config = load(BASE + "batching: {embeddings: {window_ms: 1000}}\n")
    assert config.batching.embeddings_window_s == 1.0
    assert config.batching.embeddings_enabled is False  # a window alone does not turn it on


def test_numbers_and_switches_may_come_from_the_environment() -> None:
    config = load(
        BASE
        + "cache: {enabled: '${CACHE_ON}', memory_max_bytes: '${CACHE_BYTES}'}\n"
        + "batching: {embeddings: {window_ms: '${WINDOW_MS}'}}\n",
        {"CACHE_ON": "false", "CACHE_BYTES": "1024", "WINDOW_MS": "7.5"},
    )
    assert (config.cache.enabled, config.cache.memory_max_bytes) == (False, 1024)
    assert config.batching.embeddings_window_s == 0.0075


def test_optimizer_problems_carry_their_line_and_come_in_file_order() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            BASE
            + "tiers:\n  auto:\n    candidates: [gpt-4o-mini, gpt-4o]\n    default: gpt-4o\n"
            + "    rules:\n      - name: r\n        use: o3\n"
            + "cache:\n  hit_cost_fraction: 2\n"
        )
    assert info.value.problems == [
        (
            "tiers.auto.rules[0].use",
            "'o3' is not one of the candidates (gpt-4o-mini, gpt-4o) (line 26)",
        ),
        ("cache.hit_cost_fraction", "must be at most 1, got 2 (line 28)"),
    ]


def test_the_demo_config_shows_every_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPENDGATE_"):
            monkeypatch.delenv(name)
    config = load_config()
    (auto,) = config.tiers.values()
    assert (auto.name, auto.candidates, auto.default) == (
        "auto",
        ("gpt-4o-mini", "gpt-4o"),
        "gpt-4o-mini",
    )
    assert "auto" not in config.models
    assert [(r.name, r.use) for r in auto.rules] == [
        ("budget-saver", "gpt-4o-mini"),
        ("premium-hint", "gpt-4o"),
        ("long-prompt", "gpt-4o"),
    ]
    rules = {r.name: r.when for r in auto.rules}
    assert rules["budget-saver"] == TierCondition(budget_used_pct_gte=90)
    assert rules["premium-hint"] == TierCondition(hint=("premium",))
    assert rules["long-prompt"] == TierCondition(prompt_tokens_gt=4000)
    assert auto.cascade == CascadeConfig(checks=("length", "invalid_json", "empty"), stream=False)
    assert config.cache.enabled
    assert config.cache.routes == {"gpt-4o-mini": CacheRoutePolicy("always", 600, shared=False)}
    assert config.batching == BatchingConfig(embeddings_enabled=True, embeddings_window_s=0.005)


def test_the_production_example_tiers_caches_and_batches() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    auto, gpt_4o = config.tiers["auto"], config.tiers["gpt-4o"]
    assert auto.rules[0].name == "budget-saver"  # first, so it wins over the upgrades
    assert auto.cascade == CascadeConfig()
    assert gpt_4o.default == "gpt-4o"
    assert gpt_4o.rules[0].when.environment == ("dev", "staging")
    assert config.cache.routes["smart"].mode == "off"
    assert config.cache.routes["llama-3.1-70b"] == CacheRoutePolicy("always", 86400, shared=True)
    assert config.cache.hit_cost_fraction == 0.1
    assert config.batching.coalesce_billing == "split"
    assert config.batching.embeddings_enabled
    route = config.models["gpt-4o"]
    assert (route.max_tokens_cap, route.max_prompt_tokens) == (4096, 100000)
