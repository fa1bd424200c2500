"""The `policies:` section: names, patterns and tiers compile to the exposed names they block;
`check-config` refuses a policy naming an unknown model, tier, team or tag (file, path,
reason); and the pure decisions (scope, blocks, limits, missing tags) say why."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.config.loader import check_config_main
from gateway.config.policies import PoliciesConfig, Size
from gateway.types import Principal
from tests.config.test_config_schema import PROVIDERS, load, problems, reason_at

BASE = (
    PROVIDERS
    + """\
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
  gpt-4o-mini:
    deployments: [{provider: openai, model: gpt-4o-mini}]
  o1:
    deployments: [{provider: openai, model: o1}]
  o1-mini:
    deployments: [{provider: openai, model: o1-mini}]
pricing:
  overrides:
    gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.6}
    o1: {input_per_1m: 15, output_per_1m: 60}
    o1-mini: {input_per_1m: 3, output_per_1m: 12}
tiers:
  premium:
    candidates: [gpt-4o, o1]
    default: gpt-4o
teams:
  search:
    keys:
      - {name: svc, key: sk-sg-search-service-key-1, tags: {cost-center: cc1}}
  support: {}
"""
)

POLICIES = """\
policies:
  tag_keys: [owner]
  models:
    - name: no-reasoning-in-dev
      when: {environment: dev}
      block: ["o1*"]
      reason: reasoning models are for production
    - name: no-premium-for-support
      when: {team: support}
      block_tiers: premium
  approvals:
    - name: big-requests
      models: [gpt-4o]
      max_cost_usd: "0.25"
      max_n: 4
      grant_s: 3600
  tags:
    - name: prod-is-tagged
      when: {environment: [prod]}
      require: [project, cost-center]
      action: block
    - name: owner-everywhere
      require: owner
"""


def principal(**fields: object) -> Principal:
    tags = fields.pop("tags", {})
    return Principal(key_id="key_0", team="search", tags=MappingProxyType(tags), **fields)  # type: ignore[arg-type]


def test_no_section_means_no_policies() -> None:
    assert load(BASE).policies == PoliciesConfig()
    assert not load(BASE).policies.enabled


def test_patterns_and_tiers_expand_to_the_names_they_block() -> None:
    policies = load(BASE + POLICIES).policies
    reasoning, premium = policies.models
    assert reasoning.blocked == {"o1", "o1-mini"}
    assert premium.blocked == {"premium", "gpt-4o", "o1"}
    assert premium.rules == ("tier premium",)
    assert reasoning.blocks(principal(environment="dev"), ["o1-mini"]) == "o1-mini"
    assert reasoning.blocks(principal(environment="prod"), ["o1-mini"]) is None
    # A request without an environment is not "in dev": the tag policies cover that.
    assert reasoning.blocks(principal(), ["o1"]) is None
    # The routed model counts too: a tier that picks o1 in dev is refused.
    assert reasoning.blocks(principal(environment="dev"), ["premium", "o1"]) == "o1"
    assert premium.blocks(Principal("key_1", "support"), ["gpt-4o"]) == "gpt-4o"
    assert premium.scope.describe() == "team support"


def test_approval_limits_say_which_one_was_passed() -> None:
    (policy,) = load(BASE + POLICIES).policies.approvals
    assert policy.models == {"gpt-4o"} and policy.grant_s == 3600
    assert policy.covers(principal(), "gpt-4o") and not policy.covers(principal(), "o1")
    assert policy.exceeded(Size(250_000_000, 100, 4, 10)) is None
    assert policy.exceeded(Size(250_000_001, 100, 1, 10)) == (
        "estimated worst-case cost 0.250000001 USD is over 0.25 USD"
    )
    assert policy.exceeded(Size(1, 100, 5, 10)) == "n 5 is over 4"


def test_missing_tags_count_fields_and_tag_keys() -> None:
    policies = load(BASE + POLICIES).policies
    prod, owner = policies.tags
    assert prod.action == "block" and owner.action == "warn"
    bare = principal(environment="prod")
    assert prod.missing(bare) == ("project", "cost-center")
    tagged = principal(environment="prod", project="p", tags={"cost-center": "cc1"})
    assert prod.missing(tagged) == ()
    assert prod.missing(principal(environment="dev")) == ()  # out of its scope
    assert owner.missing(principal(tags={"owner": ""})) == ("owner",)  # empty is missing
    assert policies.required_tags(bare) == ("project", "cost-center", "owner")
    assert policies.required_tags(principal()) == ("owner",)


@pytest.mark.parametrize(
    ("policy", "path", "expected"),
    [
        (
            "models: [{name: x, block: [gpt-4p]}]",
            "policies.models[0].block[0]",
            "unknown model or tier 'gpt-4p' (did you mean 'gpt-4o'?)",
        ),
        (
            "models: [{name: x, block: ['claude*']}]",
            "policies.models[0].block[0]",
            "pattern 'claude*' matches no model or tier",
        ),
        (
            "models: [{name: x, block_tiers: [premum]}]",
            "policies.models[0].block_tiers[0]",
            "unknown tier 'premum' (did you mean 'premium'?)",
        ),
        (
            "models: [{name: x, when: {team: serch}, block: [o1]}]",
            "policies.models[0].when.team[0]",
            "unknown team 'serch' (did you mean 'search'?)",
        ),
        (
            "tags: [{name: x, require: [cost-centre]}]",
            "policies.tags[0].require[0]",
            "unknown tag 'cost-centre' (did you mean 'cost-center'?)",
        ),
        (
            "approvals: [{name: x, when: {tags: {costcenter: a}}, max_n: 2}]",
            "policies.approvals[0].when.tags.costcenter",
            "unknown tag 'costcenter'",
        ),
        (
            "approvals: [{name: x, models: [gpt4o], max_n: 2}]",
            "policies.approvals[0].models[0]",
            "unknown model or tier 'gpt4o'",
        ),
        ("approvals: [{name: x}]", "policies.approvals[0].max_cost_usd", "give at least one"),
        ("models: [{name: x}]", "policies.models[0].block", "give block"),
        (
            "models: [{name: x, block: o1}]\n  tags: [{name: x, require: project}]",
            "policies.tags[0].name",
            "duplicate policy name 'x' (also policies.models[0])",
        ),
        (
            "tags: [{name: x, require: project, action: deny}]",
            "policies.tags[0].action",
            "expected one of 'warn', 'block'",
        ),
    ],
)
def test_bad_policies_are_refused_with_path_and_reason(
    policy: str, path: str, expected: str
) -> None:
    found = problems(BASE + "policies:\n  " + policy + "\n")
    assert expected in reason_at(found, path)


def test_check_config_names_the_file_path_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE + POLICIES)
    assert check_config_main(str(good)) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "policies:\n  models: [{name: dev, block: [o2*]}]\n")
    assert check_config_main(str(bad)) == 1
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "policies.models[0].block[0]: pattern 'o2*' matches no model or tier" in err
