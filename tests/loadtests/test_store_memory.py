"""A smoke of loadtests/store_memory.py on a small load: it starts its own redis-server, settles
and applies the events, and reports every kind it measures. The figures are the script's to
measure (docs/operations.md#redis-memory), not this test's to assert; it checks that each is
there and that the kinds add up to something."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.timeout(120)
def test_the_memory_measurement_runs_and_reports_each_kind() -> None:
    cmd = [sys.executable, str(REPO / "loadtests" / "store_memory.py")]
    result = subprocess.run(
        [*cmd, "--events", "3000", "--teams", "2"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    per_event = re.search(r"(\d+) B per event", out)
    assert per_event and int(per_event[1]) > 0, out
    for kind in ("daily rollups", "daily FOCUS charge lines", "hourly rollups", "anomaly fine"):
        found = re.search(rf"{kind}[^:]*: ([\d,]+) KiB per team and day", out)
        assert found and int(found[1].replace(",", "")) > 0, (kind, out)
    assert re.search(r"charge lines: [\d,]+ distinct per team and day", out), out
