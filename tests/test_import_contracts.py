"""The import contracts in pyproject.toml (the dependency direction, checked by `lint-imports` in
CI) each catch the drift they were written against: a copy of the package with one forbidden
import added breaks the contract, and the report names that import. Every contract has a case, so
a contract that no longer matches anything (a renamed module, a weakened rule) fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `lint-imports`, run by this interpreter (the venv's script may not be on PATH).
_LINT_IMPORTS = "from importlinter.cli import lint_imports_command as c; c()"

# contract id -> (module file under gateway/, the import added, what the report must name)
CASES = {
    "request-path-layers": (
        "streaming.py",
        "from gateway.pipeline import Pipeline",
        "gateway.streaming -> gateway.pipeline",
    ),
    "reporting-layers": (
        "reports/load.py",
        "from gateway.aggregator.rollups import increments",
        "gateway.reports.load -> gateway.aggregator.rollups",
    ),
    "request-path-not-reporting": (
        "cache/store.py",
        "from gateway.analytics.showback import showback",
        "gateway.cache.store -> gateway.analytics.showback",
    ),
    "analytics-pure": ("analytics/focus.py", "import redis", "gateway.analytics.focus -> redis"),
    "only-entry-points-wire": (
        "budgets/alerts.py",
        "from gateway.config.reload import LiveConfig",
        "gateway.budgets.alerts -> gateway.config.reload",
    ),
    "app-only-from-cli": (
        "aggregator/cli.py",
        "from gateway.app.state import METRICS",
        "gateway.aggregator.cli -> gateway.app.state",
    ),
    "keys-cli-is-a-leaf": (
        "reports/render.py",
        "from gateway.store.keys_cli import run",
        "gateway.reports.render -> gateway.store.keys_cli",
    ),
    "no-cycles": (
        "pricing/cost.py",
        "from gateway.config.model import Config",
        ".pricing -> .config",
    ),
}


def test_every_contract_has_a_case() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    ids = {c["id"] for c in config["tool"]["importlinter"]["contracts"]}
    assert ids == set(CASES)


@pytest.mark.parametrize("contract", sorted(CASES))
def test_a_forbidden_import_breaks_the_contract(contract: str, tmp_path: Path) -> None:
    module, line, reported = CASES[contract]
    shutil.copytree(
        REPO / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / "gateway" / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = subprocess.run(
        [sys.executable, "-c", _LINT_IMPORTS, "--no-cache", "--no-logo", "--contract", contract],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert reported in result.stdout, result.stdout
