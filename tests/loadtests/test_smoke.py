"""A short smoke of the load-test harness (loadtests/run.py --quick): it starts the mock, the
bare proxy and spendgate pinned to their cores, loads each for a second per cell and reports.

Speed is measured by the harness, never asserted here: this only proves the harness runs end to
end and every target served every request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(
        shutil.which("wrk") is None,
        reason="wrk is not installed (apt-get install wrk); the harness would fall back to its "
        "slower Python generator, which is too slow a smoke for the suite",
    ),
    pytest.mark.skipif(
        (os.cpu_count() or 1) < 2, reason="the harness pins server and generator to two cores"
    ),
]


@pytest.mark.timeout(90)
def test_quick_run_reports_every_target_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    cmd = [sys.executable, str(REPO / "loadtests" / "run.py"), "--quick"]
    cmd += ["--targets", "direct,bare,spendgate", "--scenarios", "chat,stream"]
    cmd += ["--probe-requests", "100", "--out", str(out)]
    harness = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        stdout, stderr = harness.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        harness.terminate()  # the harness stops its servers and the mock on SIGTERM
        stdout, stderr = harness.communicate(timeout=15)
        pytest.fail(f"harness took over 60 s:\n{stderr[-3000:]}")
    assert harness.returncode == 0, stderr[-3000:]

    assert "| scenario | conns | direct | bare | spendgate | spendgate/bare |" in stdout
    results = json.loads(out.read_text())
    assert results["meta"]["generator"] == "wrk"
    for target in ("direct", "bare", "spendgate"):
        cells = [r for r in results["loads"] if r["target"] == target]
        assert len(cells) == 5  # chat and stream at 4 and 32 connections, chat at 1
        assert all(r["rps"] > 0 and r["errors"] == 0 for r in cells), cells
        probes = [p for p in results["probes"] if p["target"] == target]
        assert probes and probes[0]["requests"] > 0 and probes[0]["errors"] == 0
    starts = {s["target"]: s for s in results["starts"]}
    assert starts["spendgate"]["startup_s"] > 0 and starts["spendgate"]["rss_bytes"] > 0
