"""Allocation always sums to the amount exactly, for every method, with awkward numbers."""

from __future__ import annotations

import random

import pytest

from gateway.analytics.allocation import allocate


def test_one_nano_over_three_teams() -> None:
    assert allocate(1, {"c": 5, "a": 5, "b": 5}) == {"a": 1, "b": 0, "c": 0}
    assert allocate(1, {"c": 0, "a": 0, "b": 0}, "even") == {"a": 1, "b": 0, "c": 0}
    assert allocate(2, {"x": 1, "y": 1, "z": 1}, "even") == {"x": 1, "y": 1, "z": 0}


def test_proportional_with_primes() -> None:
    parts = allocate(1_000_000_007, {"a": 3, "b": 7, "c": 11})
    assert sum(parts.values()) == 1_000_000_007
    # Exact shares: 142857143.857, 333333335.667, 523809528.476 -> floors, then the 2 nanos left
    # go to the largest remainders (a: .857, b: .667).
    assert parts == {"a": 142_857_144, "b": 333_333_336, "c": 523_809_527}


def test_largest_remainder_not_first_come() -> None:
    # 10 over shares 1, 1, 8: exact 1, 1, 8; 11 over them: 1.1, 1.1, 8.8 -> c gets the nano.
    assert allocate(11, {"a": 1, "b": 1, "c": 8}) == {"a": 1, "b": 1, "c": 9}


def test_fixed_weights_and_missing_weights() -> None:
    parts = allocate(100, {"a": 999, "b": 0, "c": 1}, "fixed", {"a": 1, "b": 3})
    assert parts == {"a": 25, "b": 75, "c": 0}


def test_zero_bases_fall_back_to_even() -> None:
    assert allocate(10, {"a": 0, "b": 0}) == {"a": 5, "b": 5}
    assert allocate(10, {"a": 1, "b": 2}, "fixed", {}) == {"a": 5, "b": 5}
    assert allocate(9, {"a": -5, "b": 0, "c": 0}) == {"a": 3, "b": 3, "c": 3}


def test_negative_amount_and_nothing_to_allocate() -> None:
    parts = allocate(-7, {"a": 1, "b": 1})
    assert parts == {"a": -4, "b": -3}
    assert allocate(0, {"a": 1, "b": 2}) == {"a": 0, "b": 0}
    assert allocate(0, {}) == {}
    with pytest.raises(ValueError):
        allocate(1, {})


def test_tie_breaks_are_by_team_name_and_deterministic() -> None:
    shares = {"zeta": 1, "alpha": 1, "mid": 1}
    assert allocate(2, shares) == {"alpha": 1, "mid": 1, "zeta": 0}
    assert allocate(2, dict(reversed(shares.items()))) == allocate(2, shares)


@pytest.mark.parametrize("method", ["proportional", "even", "fixed"])
def test_random_inputs_always_sum_exactly(method: str) -> None:
    rng = random.Random(20261105)
    for _ in range(3000):
        n = rng.randint(1, 12)
        teams = [f"t{i:02d}" for i in rng.sample(range(100), n)]
        shares = {t: rng.choice((0, 1, rng.randint(0, 10**12), 2**61 - 1)) for t in teams}
        weights = {t: rng.choice((0, 1, rng.randint(0, 1000))) for t in teams if rng.random() < 0.8}
        amount = rng.choice((1, 2, 3, 7, rng.randint(-(10**15), 10**15), 10**18 + 9))
        parts = allocate(amount, shares, method, weights)  # type: ignore[arg-type]
        assert sum(parts.values()) == amount
        assert set(parts) == set(teams)
        # No part is off its exact share by a nano or more.
        basis = (
            dict.fromkeys(teams, 1)
            if method == "even"
            else {t: max(weights.get(t, 0) if method == "fixed" else shares[t], 0) for t in teams}
        )
        if not any(basis.values()):
            basis = dict.fromkeys(teams, 1)
        total = sum(basis.values())
        for t in teams:
            exact_times_total = abs(amount) * basis[t]
            assert abs(abs(parts[t]) * total - exact_times_total) < total
            assert parts[t] == 0 or (parts[t] > 0) == (amount > 0)
