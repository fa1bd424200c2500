"""`python loadtests/report.py RESULTS.json` prints a saved run's report, as the run did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "loadtests" / "results" / "sample-layouts-lull.json"


def render(sample: Path) -> str:
    """`python loadtests/report.py SAMPLE`'s output; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(REPO / "loadtests" / "report.py"), str(sample)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_saved_run_is_rendered_again() -> None:
    stdout = render(SAMPLE)
    assert "| scenario | conns | direct | bare | spendgate-local | spendgate-redis |" in stdout
    # The one-client figures the benchmarks page quotes from this file (+0.58 / +1.94 ms).
    assert "| spendgate-redis |" in stdout and "+0.58 / +1.94" in stdout


def test_each_load_cell_is_one_row_of_the_layouts_table() -> None:
    # A run whose connection counts include 1 (the one-client probe's count too).
    stdout = render(REPO / "loadtests" / "results" / "sample-layouts-2026-12-04-after.json")
    layouts = stdout.split("Store layouts", 1)[1].split("\n\n", 2)[1]
    cells = [tuple(line.split(" | ")[:2]) for line in layouts.splitlines()[2:]]
    assert len(cells) == 9 and len(set(cells)) == len(cells), cells
