"""The `spendgate` command line: subcommands that take their own options."""

from __future__ import annotations

import subprocess
import sys


def test_mock_upstream_takes_its_own_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "mock-upstream", "--port", "0", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--latency-ms" in result.stdout and "--port" in result.stdout
