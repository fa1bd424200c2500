"""Anomaly detection on synthetic histories (tests/analytics/synthetic.py): weeks of bucketed
traffic with daily and weekly seasonality and noise, from a seeded RNG. Without injections,
nothing is raised; each injected anomaly (a runaway key, a new key, a switch to a dearer model,
a surge, longer prompts, a cache that stops hitting, cascades escalating, a drop to zero, a slow
drift) is raised within two buckets of its start (drift: within days), at the severity its true
excess calls for, with its true cause ranked first, and resolved once it ends."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest

from gateway.analytics.detector import Pattern, severity_of
from gateway.config.model import AnomaliesConfig
from tests.analytics.synthetic import (
    BUCKET_S,
    CHEAP,
    DAY,
    DEAR,
    FIRST,
    WEEK,
    Injection,
    Replay,
    Team,
    buckets,
    mean_cost,
    replay,
    weekday_afternoon,
)

CONFIG = AnomaliesConfig()
# Wednesday of the fourth week, 11:00 UTC: three weeks of history, so the baseline is weekly.
START = weekday_afternoon(3, 2, 11)
LENGTH = 24  # two hours
SEED = 7


@functools.cache
def normal(team: Team, stop: int, seed: int = SEED) -> tuple[tuple[int, dict[str, int]], ...]:
    return tuple(buckets(team, FIRST, stop, seed))


def detect(
    team: Team,
    injection: Injection | None,
    *,
    evaluate_from: int,
    stop: int,
    config: AnomaliesConfig = CONFIG,
    suppress: dict[Pattern, str] | None = None,
) -> Replay:
    """Normal history up to `evaluate_from` (shared between tests), then the rest with the
    injection, evaluating every bucket from `evaluate_from` on."""
    injections = (injection,) if injection else ()
    prefix = normal(team, evaluate_from)
    return replay(
        team,
        evaluate_from,
        stop,
        SEED + 1,
        injections,
        prefix=prefix,
        config=config,
        suppress=suppress,
    )


# Teams of three sizes: about $0.10, $1 and $10 a bucket at the weekday peak.
SMALL, MEDIUM, LARGE = (Team(f"t{rate}", rate=rate) for rate in (80, 800, 8000))


@pytest.mark.parametrize("team", [SMALL, MEDIUM, LARGE], ids=["small", "medium", "large"])
def test_four_weeks_of_normal_traffic_raise_nothing(team: Team) -> None:
    """Every baseline mode in turn: cold start, flat (first two days), daily (to two weeks),
    weekly; the drift test hourly from its eighth day."""
    run = detect(team, None, evaluate_from=FIRST, stop=FIRST + 4 * WEEK)
    assert run.changes == []


def test_a_second_seed_of_a_weekly_history_raises_nothing() -> None:
    run = detect(MEDIUM, None, evaluate_from=FIRST + 2 * WEEK, stop=FIRST + 4 * WEEK)
    assert [(n, c.anomaly.id) for n, c in run.changes] == []


KEY = "key_000000000003"
NEW_KEY = "key_00000000000f"
INJECTIONS = {
    # A batch job looping on one key: 20x the team's peak traffic from that key alone.
    "runaway key": (
        LARGE,
        Injection("key", KEY, START, LENGTH, extra_key=(KEY, 20 * 8000)),
        "high",
    ),
    "new key": (
        LARGE,
        Injection("key", NEW_KEY, START, LENGTH, extra_key=(NEW_KEY, 6 * 8000)),
        "medium",
    ),
    # A tier rule now sending three requests in four to the big model.
    "dearer model": (
        LARGE,
        Injection(
            "route",
            "auto -> openai/gpt-4o",
            START,
            LENGTH,
            change={"routes": (replace(CHEAP, weight=0.25), replace(DEAR, weight=0.75))},
        ),
        "low",
    ),
    "traffic surge": (LARGE, Injection("volume", "", START, LENGTH, {"rate": 8000 * 6}), "medium"),
    "longer prompts": (LARGE, Injection("size", "", START, LENGTH, {"tokens": 900 * 3}), "low"),
    "cache stops hitting": (
        replace(LARGE, hit_rate=0.7),
        Injection("cache", "", START, LENGTH, {"hit_rate": 0.0}),
        "low",
    ),
    "cascades escalating": (
        LARGE,
        Injection("escalation", "", START, LENGTH, {"escalation": 0.6}),
        "low",
    ),
}


@pytest.mark.parametrize("name", list(INJECTIONS))
def test_an_injected_spike_is_raised_within_two_buckets_with_its_cause_first(name: str) -> None:
    team, injection, severity = INJECTIONS[name]
    run = detect(team, injection, evaluate_from=START - 12, stop=START + LENGTH + 12)
    (n, opened), *_ = run.events("opened")
    assert opened.kind == "spike" and opened.scope == "team"
    assert START <= n <= START + 1, f"raised {n - START} buckets after the start"
    assert opened.start_s == START * BUCKET_S
    # Its excess is the true one (what the injection added over the model's mean), near enough,
    # and the severity is that excess's level.
    true_excess = sum(
        run.history.value("t||cost", m) - mean_cost(team, m) for m in range(START, n + 1)
    )
    assert opened.excess_nano == pytest.approx(true_excess, rel=0.15)
    assert opened.severity == severity == severity_of(CONFIG.defaults, math.inf, true_excess)
    top = opened.causes[0]
    assert (top.kind, top.value) == (injection.cause, injection.value)
    assert top.share >= 0.5
    if name == "new key":
        assert top.detail == "new key, never seen before"
    # It stays open while the injection lasts (escalating as its excess grows), then resolves.
    ((resolved_at, resolved),) = run.events("resolved")
    assert resolved.id == opened.id
    assert START + LENGTH <= resolved_at < START + LENGTH + CONFIG.resolve_after_buckets + 2
    assert resolved.end_s == (START + LENGTH) * BUCKET_S
    assert resolved.buckets == LENGTH
    assert len(run.events("opened")) == 1
    levels = [a.severity for _, a in run.events("escalated")]
    assert levels == sorted(set(levels), key=["low", "medium", "high", "critical"].index)
    assert resolved.causes[0].kind == injection.cause


def test_a_team_that_stops_spending_is_a_drop() -> None:
    stop = Injection("volume", "", START, LENGTH, {"rate": 0.0})
    run = detect(LARGE, stop, evaluate_from=START - 12, stop=START + LENGTH + 12)
    ((n, opened),) = run.events("opened")
    assert opened.kind == "drop"
    assert n == START + CONFIG.drop_buckets - 1
    assert opened.excess_nano < 0 and opened.actual_nano == 0
    assert [c.kind for c in opened.causes] == ["volume"]
    ((resolved_at, _),) = run.events("resolved")
    assert START + LENGTH <= resolved_at < START + LENGTH + CONFIG.resolve_after_buckets + 2


def test_requests_that_all_fail_are_a_drop_caused_by_errors() -> None:
    failing = Injection("errors", "", START, LENGTH, {"errors": 1.0, "tokens": 0.0})
    run = detect(LARGE, failing, evaluate_from=START - 12, stop=START + 12)
    ((_, opened),) = run.events("opened")
    assert opened.kind == "drop"
    assert opened.causes[0].kind == "errors"


def test_a_quiet_team_going_quiet_is_no_drop() -> None:
    """Too few requests expected for their absence to mean anything."""
    quiet = replace(SMALL, rate=2.0)
    stop = Injection("volume", "", START, LENGTH, {"rate": 0.0})
    assert detect(quiet, stop, evaluate_from=START - 12, stop=START + LENGTH).changes == []


def test_a_slow_rise_over_days_is_drift() -> None:
    """+10 % a day from the third week on: each bucket looks normal next to the last day (the
    spike baseline follows the level), but the daily totals keep rising."""
    since = FIRST + 2 * WEEK
    rising = Injection("volume", "", since, 2 * WEEK, {"growth": 0.10, "growth_from": since})
    run = detect(MEDIUM, rising, evaluate_from=FIRST + 2 * WEEK, stop=FIRST + 4 * WEEK)
    opened = run.events("opened")
    assert [a.kind for _, a in opened] == ["drift"]
    n, drift = opened[0]
    assert n < FIRST + 2 * WEEK + 7 * DAY  # within its window of seven days
    assert drift.excess_nano > CONFIG.defaults.min_impact_nano
    assert drift.causes[0].kind == "volume"
    assert not run.events("resolved")  # it has not stopped rising


def test_a_runaway_key_too_small_to_move_the_team_is_raised_on_its_own() -> None:
    """A key that normally spends little grows 30-fold: lost in a big team's noise, but far
    out of its own band."""
    small_key = ("key_000000000009", 0.004)
    team = replace(LARGE, name="huge", rate=80_000, keys=(*LARGE.keys, small_key))
    extra = 80_000 * 0.004 * 30
    burst = Injection("key", small_key[0], START, LENGTH, extra_key=(small_key[0], extra))
    run = detect(team, burst, evaluate_from=START - 12, stop=START + LENGTH + 12)
    (n, opened), *_ = run.events("opened")
    assert opened.scope == f"key:{small_key[0]}"
    assert n <= START + 1
    assert (opened.causes[0].kind, opened.causes[0].value) == ("key", small_key[0])


def test_an_anomaly_marked_expected_suppresses_the_same_pattern() -> None:
    team, injection, _ = INJECTIONS["runaway key"]
    first = detect(team, injection, evaluate_from=START - 12, stop=START + 4)
    ((_, anomaly),) = first.events("opened")
    pattern = anomaly.pattern()
    assert pattern == (team.name, "spike", "key", KEY)
    again = detect(
        team,
        injection,
        evaluate_from=START - 12,
        stop=START + 4,
        suppress={pattern: anomaly.id},
    )
    ((_, suppressed),) = again.events("opened")
    assert suppressed.suppressed_by == anomaly.id
    other = detect(
        team,
        INJECTIONS["traffic surge"][1],
        evaluate_from=START - 12,
        stop=START + 4,
        suppress={pattern: anomaly.id},
    )
    ((_, surge),) = other.events("opened")
    assert surge.suppressed_by is None


def test_no_alert_during_the_cold_start_unless_it_is_large() -> None:
    """A team's first buckets: nothing to compare with, so only an absolute amount alerts."""
    spike = Injection("volume", "", FIRST + 10, 3, {"rate": 8000 * 20})
    night = FIRST + 10  # 00:50 on the first day: the rate is low, the spike large
    quiet = detect(LARGE, spike, evaluate_from=FIRST, stop=night + 6)
    assert quiet.changes == []
    loud = replace(CONFIG, cold_start_min_nano=20_000_000_000)
    run = detect(LARGE, spike, evaluate_from=FIRST, stop=night + 6, config=loud)
    ((n, opened),) = run.events("opened")
    assert n == night and opened.severity == "medium"


def test_a_disabled_team_is_not_evaluated() -> None:
    team, injection, _ = INJECTIONS["traffic surge"]
    off = replace(CONFIG, teams={team.name: replace(CONFIG.defaults, enabled=False)})
    run = detect(team, injection, evaluate_from=START - 12, stop=START + 4, config=off)
    assert run.changes == []
