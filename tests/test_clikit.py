"""The pieces the admin commands share: config path resolution, plain tables, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import clikit
from gateway.errors import ConfigError, InvalidRequest


def test_config_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(clikit.CONFIG_ENV, raising=False)
    assert clikit.config_path("x.yaml") == Path("x.yaml")
    assert clikit.config_path(None).name == "gateway.yaml"  # the packaged default
    monkeypatch.setenv(clikit.CONFIG_ENV, "/etc/sg.yaml")
    assert clikit.config_path(None) == Path("/etc/sg.yaml")
    monkeypatch.delenv(clikit.CONFIG_ENV)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text("{}")
    assert clikit.config_path(None) == Path("config/gateway.yaml")


def test_a_missing_config_file_is_one_line() -> None:
    with pytest.raises(clikit.CliError, match=r"config file /nonexistent\.yaml not found"):
        clikit.load_config(Path("/nonexistent.yaml"))


def test_table() -> None:
    rows = [("a", "long value"), ("bbb", "-")]
    assert clikit.table(("x", "y"), rows, empty="(none)").splitlines() == [
        "x    y",
        "a    long value",
        "bbb  -",
    ]
    assert clikit.table(("x", "y"), [], empty="(none)").splitlines() == ["x  y", "(none)"]


async def test_run_command_turns_expected_failures_into_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def fails(exc: Exception) -> int:
        raise exc

    assert await clikit.run_command("keys", fails(clikit.CliError("no admin key"))) == 1
    assert capsys.readouterr().err == "spendgate keys: no admin key\n"
    assert await clikit.run_command("budgets", fails(InvalidRequest("bad name"))) == 1
    assert capsys.readouterr().err == "spendgate budgets: bad name\n"
    problem = ConfigError("x.yaml", [("server.port", "expected an integer")])
    assert await clikit.run_command("report", fails(problem)) == 1
    assert "server.port" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug is not an expected failure
        await clikit.run_command("keys", fails(ZeroDivisionError()))
