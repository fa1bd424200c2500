"""Hot reload: a bad file keeps the running config; a good one swaps it and tells listeners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.config.reload import LiveConfig

MINIMAL = (
    Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "config" / "minimal.yaml"
).read_text()
WAIT_S = 5.0


def write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    write(path, MINIMAL)
    return path


@pytest.fixture
def live(config_file: Path) -> LiveConfig:
    return LiveConfig(load_config(config_file), config_file)


def with_retries(text: str, retries: int) -> str:
    return text.replace("  gpt-4o:\n", f"  gpt-4o:\n    retries: {retries}\n", 1)


class Recorder:
    """Listener and on_result hook in one; `swapped` / `failed` are set on each outcome."""

    def __init__(self, live: LiveConfig) -> None:
        self.swaps: list[tuple[Config, Config]] = []
        self.results: list[tuple[bool, str]] = []
        self.swapped = asyncio.Event()
        self.failed = asyncio.Event()
        live.listeners.append(self.on_swap)
        live.on_result = self.on_result

    def on_swap(self, old: Config, new: Config) -> None:
        self.swaps.append((old, new))

    def on_result(self, ok: bool, reason: str) -> None:
        self.results.append((ok, reason))
        (self.swapped if ok else self.failed).set()


def test_good_file_swaps_and_calls_listeners(live: LiveConfig, config_file: Path) -> None:
    recorder = Recorder(live)
    old = live.current
    write(config_file, with_retries(MINIMAL, 5))
    assert live.reload() is True
    assert live.current.models["gpt-4o"].retries == 5
    assert recorder.swaps == [(old, live.current)]
    assert recorder.results == [(True, "ok")]
    assert (live.reloads_ok, live.reloads_failed) == (1, 0)


def test_bad_file_keeps_the_running_config(
    live: LiveConfig, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(live)
    old = live.current
    write(config_file, MINIMAL.replace("port: 8080", "port: eighty"))
    with caplog.at_level(logging.ERROR, logger="spendgate.config"):
        assert live.reload() is False
    assert live.current is old
    assert recorder.swaps == []
    assert recorder.results == [(False, "invalid")]
    assert (live.reloads_ok, live.reloads_failed) == (0, 1)
    (record,) = caplog.records
    assert record.name == "spendgate.config"
    assert record.levelno == logging.ERROR
    assert "server.port: expected an integer, got str 'eighty'" in record.getMessage()


def test_deleted_file_keeps_the_running_config(live: LiveConfig, config_file: Path) -> None:
    old = live.current
    config_file.unlink()
    assert live.reload() is False
    assert live.current is old


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("port: 8080", "port: 9090", "server.port (8080 -> 9090)"),
        ("server:\n", "server:\n  host: 0.0.0.0\n", "server.host (127.0.0.1 -> 0.0.0.0)"),
        ("server:\n", "store: {url: 'redis://:pw@r:6379/0'}\nserver:\n", "store.url"),
        (
            "server:\n",
            "store: {spool_dir: /var/lib/spendgate/spool}\nserver:\n",
            "store.spool_dir (var/spool -> /var/lib/spendgate/spool)",
        ),
        ("server:\n", "cache: {use_redis: false}\nserver:\n", "cache.use_redis (True -> False)"),
    ],
)
def test_changes_that_need_a_restart_are_refused(
    live: LiveConfig,
    config_file: Path,
    caplog: pytest.LogCaptureFixture,
    old: str,
    new: str,
    named: str,
) -> None:
    recorder = Recorder(live)
    running = live.current
    write(config_file, MINIMAL.replace(old, new, 1))
    with caplog.at_level(logging.ERROR, logger="spendgate.config"):
        assert live.reload() is False
    assert live.current is running
    assert recorder.results == [(False, "restart_required")]
    message = caplog.records[0].getMessage()
    assert named in message and "restart" in message
    assert ":pw@" not in message


def test_a_failing_listener_does_not_stop_the_others(
    live: LiveConfig, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(old: Config, new: Config) -> None:
        raise RuntimeError("listener bug")

    live.listeners.append(broken)
    recorder = Recorder(live)
    write(config_file, with_retries(MINIMAL, 4))
    with caplog.at_level(logging.ERROR, logger="spendgate.config"):
        assert live.reload() is True
    assert len(recorder.swaps) == 1
    assert "listener" in caplog.records[0].getMessage()


def test_without_a_file_there_is_nothing_to_reload(config_file: Path) -> None:
    live = LiveConfig(load_config(config_file), None)
    assert live.reload() is False
    assert live.reloads_failed == 1


@contextlib.asynccontextmanager
async def watching(live: LiveConfig) -> AsyncIterator[None]:
    task = asyncio.create_task(live.watch(interval_s=0.01))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_watch_reloads_on_change(live: LiveConfig, config_file: Path) -> None:
    recorder = Recorder(live)
    async with watching(live):
        write(config_file, MINIMAL.replace("port: 8080", "port: eighty"))
        await asyncio.wait_for(recorder.failed.wait(), WAIT_S)
        assert live.current.models["gpt-4o"].retries == 2

        write(config_file, with_retries(MINIMAL, 7))
        await asyncio.wait_for(recorder.swapped.wait(), WAIT_S)
    assert live.current.models["gpt-4o"].retries == 7
    assert recorder.results == [(False, "invalid"), (True, "ok")]


async def test_watch_follows_an_atomic_replace(live: LiveConfig, config_file: Path) -> None:
    recorder = Recorder(live)
    async with watching(live):
        staged = config_file.with_suffix(".tmp")
        write(staged, with_retries(MINIMAL, 3))
        os.replace(staged, config_file)  # what editors and Kubernetes ConfigMaps do
        await asyncio.wait_for(recorder.swapped.wait(), WAIT_S)
    assert live.current.models["gpt-4o"].retries == 3


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_sighup_reloads(live: LiveConfig, config_file: Path) -> None:
    recorder = Recorder(live)
    loop = asyncio.get_running_loop()
    live.install_sighup(loop)
    try:
        write(config_file, with_retries(MINIMAL, 6))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(recorder.swapped.wait(), WAIT_S)
    finally:
        live.remove_sighup(loop)
    assert live.current.models["gpt-4o"].retries == 6
