"""The harness's reading of /proc/stat: a core's busy time includes the host's steal, which it
also reports on its own (a cell the hypervisor starved is marked disturbed, not slow)."""

from __future__ import annotations

from loadtests.procs import core_ticks

STAT = """cpu  381660 231 45004 595279 1564 0 10008 8549 0 0
cpu0 150000 100 20000 300000 800 0 5000 4000 0 0
cpu1 231660 131 25004 295279 764 0 5008 4549 0 0
intr 1 2 3
"""


def test_a_cores_ticks_count_steal_as_busy_and_report_it() -> None:
    busy, total, steal = core_ticks(STAT, 1)
    assert total == 231660 + 131 + 25004 + 295279 + 764 + 5008 + 4549
    assert busy == total - 295279 - 764  # all but idle and iowait
    assert steal == 4549
    assert core_ticks(STAT, 0)[2] == 4000


def test_an_absent_core_and_an_old_kernels_short_line_read_as_nothing_stolen() -> None:
    assert core_ticks(STAT, 2) == (0, 0, 0)
    busy, total, steal = core_ticks("cpu0 10 0 5 80 5 0 0\n", 0)  # no steal column
    assert (busy, total, steal) == (15, 100, 0)
