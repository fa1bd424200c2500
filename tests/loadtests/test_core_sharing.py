"""core_sharing.py's cells run and report ordered percentiles (what they measure is for the
benchmark, not for a test)."""

from __future__ import annotations

import os

import pytest

from loadtests.core_sharing import cell


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pins to cores 0 and 1")
@pytest.mark.parametrize("mode", ["none", "yield"])
def test_a_cell_reports_its_round_trips(mode: str) -> None:
    p50, p99, p999 = cell(mode, 0.3)
    assert 0 < p50 <= p99 <= p999
