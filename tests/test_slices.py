"""Background work gives its core way once per slice of work, and only where it is asked to."""

from __future__ import annotations

import os

import pytest

from gateway.slices import NO_SLICES, SLICE_S, Slices


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gives_way_once_per_slice_of_work() -> None:
    clock, yields = Clock(), []
    slices = Slices(0.001, clock=clock, yield_cpu=lambda: yields.append(clock.now))
    for _ in range(10):  # 0.1 ms steps: one slice is ten of them
        slices.give_way()
        clock.now += 0.0001
    assert yields == []
    slices.give_way()
    assert yields == [pytest.approx(100.001)]
    clock.now += 0.0005
    slices.give_way()  # half a slice since it gave way
    assert len(yields) == 1
    clock.now += 0.0005
    slices.give_way()
    assert len(yields) == 2


def test_the_first_call_after_a_pause_gives_way_at_once() -> None:
    """Time blocked (waiting on the store) counts too: after a pause, a yield costs one system
    call and the next slice is measured from it."""
    clock, yields = Clock(), []
    slices = Slices(0.001, clock=clock, yield_cpu=lambda: yields.append(clock.now))
    clock.now += 5.0
    slices.give_way()
    slices.give_way()
    assert yields == [105.0]


def test_no_slices_never_gives_way() -> None:
    calls = []
    NO_SLICES.give_way()
    quiet = type(NO_SLICES)(0.0, yield_cpu=lambda: calls.append(1))
    for _ in range(100):
        quiet.give_way()
    assert calls == []


def test_the_default_hands_the_core_on_with_sched_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "sched_yield"):
        pytest.skip("no sched_yield on this platform")
    calls = []
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append(1))
    slices = Slices(0.0)
    slices.give_way()
    assert calls == [1]
    assert Slices().slice_s == SLICE_S
