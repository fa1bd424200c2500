"""The pieces anomaly detection is built of, on hand-made series: the fine-bucket history, robust
baselines and their modes, level, the trend test, weekday factors, and cause ranking (the LMDI
split adds up to the excess; a key is named only when it grew out of proportion)."""

from __future__ import annotations

import math

import pytest

from gateway.analytics.baseline import (
    DAY_S,
    HOUR_S,
    WEEK_S,
    Baselines,
    Mode,
    build_profile,
    mann_kendall_z,
    median,
    robust_scale,
    sen_slope,
    weekday_factors,
)
from gateway.analytics.causes import rank_causes, rank_drop_causes
from gateway.analytics.series import SeriesHistory

COST = "t||cost"


def test_median_and_mad_ignore_a_spike() -> None:
    values = [10.0, 11.0, 9.0, 10.0, 1000.0]
    assert median(values) == 10.0
    assert robust_scale(values, 10.0) == pytest.approx(1.4826)
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(median([]))


def test_history_zero_fills_gaps_and_knows_when_a_field_began() -> None:
    history = SeriesHistory(bucket_s=60, capacity=5)
    history.put(100, {COST: 5, "k|a|cost": 5})
    history.put(103, {COST: 7, "k|b|cost": 7})  # 101 and 102 had nothing
    assert history.window(COST, 99, 104) == [
        pytest.approx(math.nan, nan_ok=True),
        5.0,
        0.0,
        0.0,
        7.0,
    ]
    assert math.isnan(history.value("k|b|cost", 102))  # before key b was seen
    assert history.value("k|a|cost", 103) == 0.0
    assert history.span(COST, 104) == 4 and history.span("k|b|cost", 104) == 1
    history.put(103, {COST: 9})  # a re-read with late events replaces the bucket
    assert history.value(COST, 103) == 9.0 and history.value("k|b|cost", 103) == 0.0
    history.put(106, {COST: 1})
    assert math.isnan(history.value(COST, 101))  # older than the ring holds
    assert history.window(COST, 102, 107) == [0.0, 9.0, 0.0, 0.0, 1.0]
    history.put(120, {COST: 2})  # far ahead: everything before is forgotten
    assert sorted(history.names()) == [COST]
    assert history.span(COST, 121) == 1


def test_profile_interpolates_between_hour_centres() -> None:
    bucket_s = 600
    per_hour = HOUR_S // bucket_s
    # Two days of a series worth its hour of day in every bucket.
    values = [float((m // per_hour) % 24) for m in range(2 * 24 * per_hour)]
    profile = build_profile(values, 0, bucket_s, 24)
    assert profile.medians == tuple(float(h) for h in range(24))
    assert profile.scales == (0.0,) * 24
    # A bucket centred on 10:30 reads slot 10 alone; one centred on 11:00, half of 10 and 11.
    assert profile.at(10 * HOUR_S + 1500, bucket_s)[0] == pytest.approx(10.0)
    assert profile.at(10 * HOUR_S + 3300, bucket_s)[0] == pytest.approx(10.5)
    assert profile.hours_total(10, 2, per_hour) == per_hour * 21


def test_modes_follow_the_history_a_series_has() -> None:
    bucket_s = 3600
    history = SeriesHistory(bucket_s, capacity=24 * 30)
    for n in range(24 * 15):
        history.put(n, {COST: 10})
    baselines = Baselines(history, cold_start_buckets=12, seasonal_weeks=3)
    assert baselines.mode(COST, 5) == Mode.COLD
    assert baselines.mode(COST, 12) == Mode.FLAT
    assert baselines.mode(COST, 2 * 24) == Mode.DAILY
    assert baselines.mode(COST, 2 * 24 * 7) == Mode.WEEKLY
    assert Baselines(history, 12, seasonal_weeks=0).mode(COST, 24 * 14) == Mode.DAILY
    expectation = baselines.expect(COST, 24 * 14)
    assert (expectation.expected, expectation.scale) == (10.0, 0.0)


def test_excluded_buckets_stay_out_of_a_baseline() -> None:
    history = SeriesHistory(60, capacity=100)
    for n in range(20):
        history.put(n, {COST: 1000 if n >= 12 else 10})
    baselines = Baselines(history, cold_start_buckets=10, seasonal_weeks=3)
    assert baselines.expect(COST, 20).expected == 1000  # eight of the last ten are high
    assert baselines.expect(COST, 20, excluded=set(range(12, 20))).expected == 10


def test_the_weekly_baseline_follows_the_teams_level() -> None:
    """Three weeks at 10 a bucket, then a day at 20: today is expected at 20, not 10."""
    bucket_s = 3600
    history = SeriesHistory(bucket_s, capacity=24 * 30)
    today = 22 * 24
    for n in range(today):
        history.put(n, {COST: 20 if n >= today - 24 else 10})
    baselines = Baselines(history, cold_start_buckets=12, seasonal_weeks=3)
    expectation = baselines.expect(COST, today)
    assert expectation.mode == Mode.WEEKLY
    assert expectation.expected == pytest.approx(20.0)


def test_trend_test_and_theil_sen_line() -> None:
    rising = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert mann_kendall_z(rising) == pytest.approx(20 / math.sqrt(7 * 6 * 19 / 18))
    assert mann_kendall_z(rising[::-1]) == pytest.approx(-mann_kendall_z(rising))
    assert mann_kendall_z([3.0] * 7) == 0.0
    assert sen_slope([2.0, 4.0, 6.0, 80.0, 10.0, 12.0]) == (2.0, 2.0)  # one wild point


def test_weekday_factors_see_through_a_trend() -> None:
    """Three weeks, weekends at half a weekday, rising 5 % a day."""
    days = [(0.5 if (d + 4) % 7 in (5, 6) else 1.0) * 1.05**d for d in range(21)]
    factors = weekday_factors(days, first_weekday=0)
    assert factors is not None
    # Epoch day 0 was a Thursday: weekday index (d + 4) % 7 is 5 and 6 on Saturdays and Sundays.
    weekday = [f for i, f in enumerate(factors) if (i + 4) % 7 < 5]
    weekend = [f for i, f in enumerate(factors) if (i + 4) % 7 >= 5]
    assert max(weekend) / min(weekday) == pytest.approx(0.5, rel=0.08)
    assert sum(factors) / 7 == pytest.approx(1.0)
    assert weekday_factors(days[:9], 0) is None
    assert WEEK_S == 7 * DAY_S


def _totals(**changes: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """A team's totals (actual, expected) over an anomaly: 1,000 requests, 20 % cache hits,
    1,000 tokens per billed request at 1 nano a token, no escalations; `changes` override."""
    base = {
        "t||requests": (1000.0, 1000.0),
        "t||hits": (200.0, 200.0),
        "t||tokens": (800_000.0, 800_000.0),
        "t||cost": (800_000.0, 800_000.0),
        "t||extra_cost": (0.0, 0.0),
        "t||errors": (0.0, 0.0),
    }
    base.update({f"t||{k}": v for k, v in changes.items()})
    return base


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("volume", {"requests": (2000, 1000), "hits": (400, 200), "tokens": (1.6e6, 8e5)}),
        ("cache", {"hits": (0, 200), "tokens": (1e6, 8e5)}),
        ("size", {"tokens": (2.4e6, 8e5)}),
        ("mix", {}),
    ],
)
def test_each_driver_explains_a_change_of_its_own(kind: str, changes: dict[str, tuple]) -> None:
    totals = _totals(**changes)
    actual_tokens = totals["t||tokens"][0]
    price = 3.0 if kind == "mix" else 1.0
    totals["t||cost"] = (actual_tokens * price, 800_000.0)
    (top, *rest) = rank_causes(totals)
    assert top.kind == kind
    assert top.share == pytest.approx(1.0)
    assert top.excess_nano == pytest.approx(totals["t||cost"][0] - 800_000, abs=2)
    assert rest == []


def test_the_drivers_add_up_to_the_excess() -> None:
    totals = _totals(
        requests=(1500, 1000), hits=(100, 200), tokens=(1.4e6 * 1.2, 8e5), extra_cost=(3e5, 1e5)
    )
    totals["t||cost"] = (1.4e6 * 1.2 * 1.5 + 3e5, 800_000.0 + 1e5)
    causes = rank_causes(totals)
    assert {c.kind for c in causes} == {"volume", "cache", "size", "mix", "escalation"}
    excess = totals["t||cost"][0] - totals["t||cost"][1]
    assert sum(c.excess_nano for c in causes) == pytest.approx(excess, abs=5)
    assert [c.excess_nano for c in causes] == sorted((c.excess_nano for c in causes), reverse=True)


def test_a_key_is_named_only_when_it_grew_out_of_proportion() -> None:
    surge = _totals(requests=(2000, 1000), hits=(400, 200), tokens=(1.6e6, 8e5))
    surge["t||cost"] = (1.6e6, 8e5)
    for key, usual in (("a", 6e5), ("b", 2e5)):
        surge[f"k|{key}|cost"] = (2 * usual, usual)
        surge[f"k|{key}|requests"] = (2 * usual / 1000, usual / 1000)
    assert [c.kind for c in rank_causes(surge)] == ["volume"]
    runaway = dict(surge)
    runaway["k|a|cost"] = (6e5, 6e5)
    runaway["k|b|cost"] = (1e6, 2e5)
    (key, volume) = rank_causes(runaway)
    assert (key.kind, key.value, volume.kind) == ("key", "b", "volume")
    assert key.excess_nano == 800_000 and key.share == 1.0
    runaway["k|c|cost"] = (1e5, 0.0)
    runaway["k|c|requests"] = (100.0, 0.0)
    named = rank_causes(runaway, new_keys=frozenset({"c"}))
    new = next(c for c in named if c.value == "c")
    assert new.detail == "new key, never seen before"


def test_a_drop_is_requests_stopping_or_failing() -> None:
    stopped = _totals(requests=(0, 1000), hits=(0, 200), tokens=(0, 8e5), cost=(0, 8e5))
    assert [c.kind for c in rank_drop_causes(stopped)] == ["volume"]
    failing = _totals(errors=(990, 10), tokens=(0, 8e5), cost=(0, 8e5))
    (cause,) = rank_drop_causes(failing)
    assert cause.kind == "errors" and "990 of 1,000 requests failed" in cause.detail
