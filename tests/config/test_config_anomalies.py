"""The `anomalies:` section in YAML: defaults equal the runtime's, a team inherits what it does
not set (level by level), every level asks at least as much as the one below it (said at the
value the file wrote), and teams must exist."""

from __future__ import annotations

import pytest

from gateway.config.model import (
    MAX_HISTORY_BUCKETS,
    AnomaliesConfig,
    AnomalyThresholds,
    SeverityLevel,
)
from tests.config.test_config_schema import PROVIDERS, load, problems

MODELS = """\
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
teams:
  search: {}
  support: {}
"""
BASE = PROVIDERS + MODELS


def test_no_section_means_the_runtime_defaults() -> None:
    config = load(BASE)
    assert config.anomalies == AnomaliesConfig()
    assert config.anomalies.thresholds("search") == AnomalyThresholds()
    # Three weeks of 5-minute buckets, plus today.
    assert config.anomalies.history_buckets == 22 * 288


def test_a_team_inherits_level_by_level() -> None:
    config = load(
        BASE
        + """\
anomalies:
  bucket_s: 60
  z: 3.5
  min_impact_usd: 10
  severity: {high: {usd: 250}}
  cold_start_min_usd: "100.5"
  teams:
    search: {min_impact_usd: 20, severity: {critical: {z: 12}}}
    support: {enabled: false}
"""
    )
    anomalies = config.anomalies
    assert anomalies.bucket_s == 60 and anomalies.cold_start_min_nano == 100_500_000_000
    assert anomalies.defaults.levels == (
        SeverityLevel("low", 3.5, 10_000_000_000),
        SeverityLevel("medium", 4.0, 25_000_000_000),
        SeverityLevel("high", 6.0, 250_000_000_000),
        SeverityLevel("critical", 10.0, 500_000_000_000),
    )
    search = anomalies.thresholds("search")
    assert search.enabled and search.z == 3.5 and search.min_impact_nano == 20_000_000_000
    assert search.levels[2] == SeverityLevel("high", 6.0, 250_000_000_000)
    assert search.levels[3] == SeverityLevel("critical", 12.0, 500_000_000_000)
    assert not anomalies.thresholds("support").enabled
    assert anomalies.thresholds("elsewhere") is anomalies.defaults
    # One-minute buckets for three weeks would be 31,680: capped (the weekly baseline then
    # never has its two weeks, and says so in the docs).
    assert anomalies.history_buckets == MAX_HISTORY_BUCKETS


KNOWN = (
    "enabled, bucket_s, seasonal_weeks, cold_start_buckets, cold_start_min_usd, z, "
    "min_impact_usd, severity, resolve_after_buckets, drop_buckets, drift_days, "
    "drift_min_rise_pct, expected_suppress_days, teams"
)
DIVIDE = "must divide an hour (3600 s) evenly, such as 5, 10, 30, 60, 300, 600, 900, 1800, 3600"
PROBLEMS = [
    ("bucket_s: 7", "anomalies.bucket_s", f"{DIVIDE}; got 7"),
    ("bucket_s: 7200", "anomalies.bucket_s", "must be at most 3600, got 7200"),
    (
        "severity: {high: {z: 3.5}}",
        "anomalies.severity.high.z",
        "must be at least medium's 4, got 3.5",
    ),
    ("z: 5", "anomalies.z", "must be at most medium's 4, got 5"),
    (
        "teams: {search: {severity: {medium: {usd: 2}}}}",
        "anomalies.teams.search.severity.medium.usd",
        "must be at least low's 5 USD, got 2 USD",
    ),
    (
        "teams: {search: {min_impact_usd: 30}}",
        "anomalies.teams.search.min_impact_usd",
        "must be at most medium's 25 USD, got 30 USD",
    ),
    (
        "teams: {serach: {z: 4}}",
        "anomalies.teams.serach",
        "team 'serach' is not defined in teams (did you mean 'search'?)",
    ),
    ("drift_days: 2", "anomalies.drift_days", "must be at least 4, got 2"),
    ("cold_start_min_usd: 0", "anomalies.cold_start_min_usd", "must be greater than 0, got int 0"),
    ("windows: 3", "anomalies.windows", f"unknown key 'windows' (known keys: {KNOWN})"),
]


@pytest.mark.parametrize(("section", "path", "reason"), PROBLEMS)
def test_each_problem_names_its_key(section: str, path: str, reason: str) -> None:
    found = problems(BASE + "anomalies:\n  " + section + "\n")
    assert (path, reason) in found, found


def test_a_webhook_may_subscribe_to_anomalies() -> None:
    config = load(
        BASE
        + """\
alerts:
  webhooks:
    - {name: finops, url: "https://hooks.example/x", events: [anomaly]}
    - {name: all, url: "https://hooks.example/y"}
"""
    )
    finops, every = config.alerts.webhooks
    assert finops.events == ("anomaly",)
    assert "anomaly" in every.events
