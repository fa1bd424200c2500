"""The `spendgate` command line: subcommands that take their own options, and a port that is
already taken, which every command that listens reports as one line naming the port and the
option that picks another (the demo picks free ports itself)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import demo
from tests.conftest import ADMIN_KEY, FIXTURES

IN_USE = "port {port} on 127.0.0.1 is already in use; choose another with "


def test_mock_upstream_takes_its_own_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "mock-upstream", "--port", "0", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--latency-ms" in result.stdout and "--port" in result.stdout


@pytest.fixture
def held() -> Iterator[int]:
    """A port this test listens on (so nothing else can)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def spendgate(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def shared_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """budgets.yaml with a Redis URL nothing answers on: the port is checked before any
    connection is made."""
    monkeypatch.setenv("SPENDGATE_STORE_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SPENDGATE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("SPENDGATE_ADMIN_KEY", ADMIN_KEY)
    return dict(os.environ)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve"], "--port (or server.port in the config)"),
        (["serve", "--workers", "2"], "--port (or server.port in the config)"),
        (["aggregate"], "--metrics-port"),
        (["mock-upstream"], "--port, and point the gateway at it"),
        (["demo", "--duration", "0"], "--port"),
        (["demo", "--duration", "0", "--upstream-port"], "--upstream-port"),
    ],
)
def test_a_taken_port_is_one_line_naming_it_and_the_option(
    argv: list[str],
    option: str,
    held: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = shared_store_env(monkeypatch, tmp_path)
    if argv[-1] == "--upstream-port":
        argv = [*argv, str(held)]
    elif argv[0] == "aggregate":
        argv = [*argv, "--config", str(FIXTURES / "budgets.yaml"), "--metrics-port", str(held)]
    elif argv[0] == "serve":
        argv = [*argv, "--config", str(FIXTURES / "budgets.yaml"), "--port", str(held)]
    else:
        argv = [*argv, "--port", str(held)]
    result = spendgate(*argv, env=env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"spendgate [a-z -]+[0-9]*: {IN_USE.format(port=held)}.*", lines[0])
    assert option in lines[0]


def test_serve_on_a_taken_port_starts_nothing(held: int) -> None:
    """The default config, as a new user runs it: no store warning, no banner, one line."""
    result = spendgate("serve", "--port", str(held))
    assert result.returncode == 1
    assert result.stderr == (
        f"spendgate serve: {IN_USE.format(port=held)}--port (or server.port in the config)\n"
    )
    assert result.stdout == ""


@pytest.fixture
def two_held() -> Iterator[tuple[int, int]]:
    with socket.socket() as gateway, socket.socket() as upstream:
        for sock in (gateway, upstream):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        yield int(gateway.getsockname()[1]), int(upstream.getsockname()[1])


def test_the_demo_moves_to_free_ports_when_its_defaults_are_taken(
    two_held: tuple[int, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its defaults (8080, 9911) are this test's held ports: a second demo, as a user meets it.
    gateway_port, upstream_port = two_held
    monkeypatch.setattr(demo, "DEFAULT_GATEWAY_PORT", gateway_port)
    monkeypatch.setattr(demo, "MOCK_PORT", upstream_port)
    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", "restored after the test")
    assert asyncio.run(demo._run(None, None, duration=0, requests=6)) == 0
    out = capsys.readouterr().out
    instead = "is in use: the {} listens on port (\\d+) instead"
    mock = re.search(f"port {upstream_port} " + instead.format("mock upstream"), out)
    moved = re.search(f"port {gateway_port} " + instead.format("gateway"), out)
    assert mock and moved, out
    chosen = int(moved.group(1))
    assert chosen not in two_held and int(mock.group(1)) not in (*two_held, chosen)
    assert f"mock upstream on port {mock.group(1)}" in out
    # The example the user copies points at the port the gateway took.
    assert f"export OPENAI_BASE_URL=http://127.0.0.1:{chosen}/v1" in out
    assert f"metrics: http://127.0.0.1:{chosen}/metrics" in out
    assert "sent 6 requests as 3 teams (0 failed)" in out


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_command_and_option_says_what_it_is_for() -> None:
    from gateway.cli import build_parser
    from gateway.providers.mock.cli import build_parser as mock_parser

    undescribed = []
    for prog, parser in [*_parsers(build_parser()), *_parsers(mock_parser())]:
        for action in parser._actions:
            if action.help == argparse.SUPPRESS and action.dest in ("worker", "gateway_child"):
                continue  # set by `serve` on the processes it starts (workers, aggregator)
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                undescribed += [f"{prog} {c}" for c in action.choices if c not in helped]
            elif not action.help or action.help == argparse.SUPPRESS:
                undescribed.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    assert undescribed == []


def test_the_top_level_help_is_for_users() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for start in ("spendgate demo", "spendgate check-config", "spendgate serve"):
        assert re.search(rf"^  {start}\b", result.stdout, re.MULTILINE), start
    serve = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "$SPENDGATE_CONFIG" in serve.stdout
