"""The `rate_limits:` section in YAML: rules compile to the runtime's, every rule names teams
and models that exist (models: exposed models or tiers, what requests send), gives at least one
limit, and has a name of its own; `spendgate check-config` says where and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.config.model import RateLimitRule, RateLimitsConfig
from tests.config.test_config_schema import PROVIDERS, load, problems, reason_at

BASE = (
    PROVIDERS
    + """\
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
  small:
    deployments: [{provider: openai, model: gpt-4o}]
tiers:
  auto: {candidates: [small, gpt-4o], default: small}
teams:
  search: {}
  support: {}
"""
)


def test_no_section_means_no_limits() -> None:
    assert load(BASE).rate_limits == RateLimitsConfig()


def test_rules_compile() -> None:
    config = load(
        BASE
        + """\
rate_limits:
  local_share: 0.1
  rules:
    - {name: keys, per: key, requests_per_minute: 600, tokens_per_minute: 90000}
    - {name: search, per: team, teams: search, models: [auto, gpt-4o], tokens_per_minute: 5000}
"""
    )
    assert config.rate_limits == RateLimitsConfig(
        (
            RateLimitRule("keys", "key", 600, 90000),
            RateLimitRule(
                "search", "team", None, 5000, frozenset({"search"}), frozenset({"auto", "gpt-4o"})
            ),
        ),
        0.1,
    )


def test_unknown_teams_and_models_missing_limits_and_twin_names_are_refused() -> None:
    found = problems(
        BASE
        + """\
rate_limits:
  rules:
    - {name: a, per: team, teams: [search, serach], requests_per_minute: 10}
    - {name: a, per: model, models: gpt-5, tokens_per_minute: 10}
    - {name: b, per: key}
    - {name: c, per: project, requests_per_minute: 0}
"""
    )
    assert "did you mean 'search'" in reason_at(found, "rate_limits.rules[0].teams[1]")
    assert "'gpt-5' is not defined in models or tiers" in reason_at(
        found, "rate_limits.rules[1].models[0]"
    )
    assert "another rule is named 'a'" in reason_at(found, "rate_limits.rules[1].name")
    assert "requests_per_minute, tokens_per_minute or both" in reason_at(
        found, "rate_limits.rules[2].requests_per_minute"
    )
    assert reason_at(found, "rate_limits.rules[3].per")
    assert reason_at(found, "rate_limits.rules[3].requests_per_minute")
    assert problems(BASE + "rate_limits: {local_share: 2}\n") == [
        ("rate_limits.local_share", "must be at most 0.5, got 2")
    ]


def test_check_config_names_the_file_path_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        BASE
        + """\
rate_limits:
  rules:
    - {name: a, per: team, teams: [nobody], requests_per_minute: 10}
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert str(path) in out and "rate_limits.rules[0].teams[0]" in out
    assert "'nobody' is not defined in teams" in out
