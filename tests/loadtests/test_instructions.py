"""instructions.py's reading of callgrind's dumps and its table (the counting itself needs
valgrind, which CI does not install: it is a measurement, run by hand)."""

from __future__ import annotations

import pytest

from loadtests.instructions import callgrind_totals, table

# The head and tail of a dump taken after `callgrind_control -z`: its summary line says 0, the
# totals line at the end what was counted.
DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 22079
desc: Trigger: dump chat

positions: line
events: Ir
summary: 0


fn=(3248) multidict_iter_tp_dealloc
330 6000
totals: 182889064
"""


def test_the_counted_instructions_are_the_dumps_totals() -> None:
    assert callgrind_totals(DUMP) == 182_889_064
    assert callgrind_totals("events: Ir\nsummary: 399433515\n") == 399_433_515  # no totals line
    with pytest.raises(ValueError, match="no totals"):
        callgrind_totals("events: Ir\nfn=(1) main\n1 2\n")


def test_the_table_gives_the_bare_proxys_share_of_spendgates_count() -> None:
    counts = {
        "bare": {"chat": 609_630.0, "embeddings": 603_996.0},
        "spendgate": {"chat": 1_264_651.0, "embeddings": 1_450_177.0},
    }
    lines = table(counts, ["chat", "embeddings"], 4).splitlines()
    assert lines[0] == "| scenario | conns | bare | spendgate | bare / spendgate |"
    assert lines[2] == "| chat | 4 | 0.610 M | 1.265 M | 0.48x |"
    assert lines[3] == "| embeddings | 4 | 0.604 M | 1.450 M | 0.42x |"
    alone = table({"spendgate": counts["spendgate"]}, ["chat"], 4).splitlines()
    assert alone[0] == "| scenario | conns | spendgate |" and alone[2] == "| chat | 4 | 1.265 M |"
