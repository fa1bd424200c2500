"""`spendgate serve --workers N`: a supervisor process and N gateway workers on one port.

The supervisor runs no app. It starts N `spendgate serve --worker i/N` processes that each bind
the port with SO_REUSEPORT (the kernel spreads connections over them), forwards SIGTERM/SIGINT
(a graceful stop: each worker drains its settles) and SIGHUP (config reload), restarts a worker
that dies, with a backoff, and gives up when workers keep dying before they listen. Workers
share keys and budgets through the store (with `local://`, the supervisor runs its server and
the workers connect to it, and it runs the aggregator as a child process whose metrics every
worker's /metrics merges in), and metrics through PROMETHEUS_MULTIPROC_DIR.

A worker's stdin is one end of a socket pair the supervisor holds: the worker writes `ready`
there once it listens, and reads end-of-file if the supervisor dies (then it stops, gracefully).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.aggregator.child import AggregatorChild, aggregator_socket
from gateway.config.model import Config
from gateway.listen import GATEWAY_PORT_OPTION, PortUnavailable, check_port, serve_app
from gateway.store.server import LocalServer, StoreServerError

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.app.server import WorkerSlot

log = logging.getLogger("spendgate.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_CONTROL_FD = 0  # the worker's stdin: see the module docstring
_READY = b"ready\n"


def supervise(
    config: Config, path: str | None, host: str, port: int, count: int, log_level: str
) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the exit status of `serve --workers`."""
    problem = _refusal(config, host, port)
    if problem is not None:
        print(f"spendgate serve --workers {count}: {problem}", file=sys.stderr)
        return 1
    metrics_dir, owned = _metrics_dir()
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-m", "gateway", "serve", "--host", host, "--port", str(port)]
        argv += ["--log-level", log_level, "--worker", f"{index}/{count}"]
        return argv + (["--config", path] if path is not None else [])

    print(
        f"spendgate {__version__} serving on http://{host}:{port} with {count} workers "
        f"(config: {config.source})",
        file=sys.stderr,
        flush=True,
    )
    log.info("metrics: multiprocess mode, files in %s", metrics_dir)
    supervisor = Supervisor(command, count, env, metrics_dir, reloadable=path is not None)
    try:
        return asyncio.run(_run_with_store(supervisor, config, path, log_level))
    except StoreServerError as exc:
        print(f"spendgate serve --workers {count}: {exc}", file=sys.stderr)
        return 1
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def _run_with_store(
    supervisor: Supervisor, config: Config, path: str | None, log_level: str
) -> int:
    """The supervisor's run, inside the life of the local store's server and its aggregator
    (a child process, started once every worker listens) when the store is local:// (the
    workers are the server's clients; both stop once the workers have)."""
    if not config.store.local:
        return await supervisor.run()
    server = LocalServer(config.store.data_dir)
    await server.start()
    try:
        if path is None:
            return await supervisor.run()
        aggregator = AggregatorChild(path, aggregator_socket(config.store.data_dir), log_level)
        async with aggregator.running_once(supervisor.listening):
            return await supervisor.run()
    finally:
        await server.stop()


def _refusal(config: Config, host: str, port: int) -> str | None:
    if config.store.embedded:
        return (
            "store.url is memory:// (in-process, one per process), so the workers would not "
            "share keys, budgets or spend. Use the local store (remove store.url, or "
            "store.url: local://), a Redis (store.url: redis://...) or one worker."
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this platform has no SO_REUSEPORT; run one worker per port instead"
    if port == 0:
        return "workers need a fixed port (each would pick its own with port 0)"
    try:
        check_port(host, port)
    except PortUnavailable as exc:
        return exc.message(GATEWAY_PORT_OPTION)
    return None


def _metrics_dir() -> tuple[str, bool]:
    """The PROMETHEUS_MULTIPROC_DIR of this run, and whether it is ours to delete at exit.

    A directory the user set is used, emptied of an earlier run's files first: a dead
    process's live-gauge values or counters would otherwise be counted in this run's."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        return tempfile.mkdtemp(prefix="spendgate-metrics-"), True
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    stale = list(directory.glob("*.db"))
    for file in stale:
        file.unlink()
    if stale:
        log.info("metrics: removed %d files of an earlier run from %s", len(stale), directory)
    return given, False


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    control: socket.socket
    ready: bool = False


class Supervisor:
    """Keeps `count` workers running: one task per slot starts its worker, waits for it to
    listen and to exit, and restarts it after a backoff unless the supervisor is stopping."""

    def __init__(
        self,
        command: Callable[[int], list[str]],
        count: int,
        env: Mapping[str, str],
        metrics_dir: str,
        *,
        reloadable: bool = True,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        start_attempts: int = 4,
    ) -> None:
        self._command = command
        self._count = count
        self._env = dict(env)
        self._metrics_dir = metrics_dir
        self._reloadable = reloadable
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._start_attempts = start_attempts  # consecutive deaths before listening
        self._workers: dict[int, _Worker] = {}
        self._stopping = asyncio.Event()
        self.listening = asyncio.Event()  # set once every worker has listened
        self._status = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            await asyncio.gather(*(self._keep(index) for index in range(self._count)))
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("all workers stopped")
        return self._status

    def stop(self, signum: int | None = None) -> None:
        """Stop every worker gracefully (SIGTERM: each finishes its requests and settles)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        reason = f"on {signal.Signals(signum).name}" if signum is not None else "after a failure"
        log.info("stopping %d workers %s", len(self._workers), reason)
        for worker in self._workers.values():
            self._signal(worker, signal.SIGTERM)

    def _reload(self) -> None:
        if self._stopping.is_set():
            return
        if not self._reloadable:
            log.warning("SIGHUP ignored: the config was not read from a file")
            return
        ready = [w for w in self._workers.values() if w.ready]
        log.info("SIGHUP: reloading the config in %d workers", len(ready))
        # Only workers that listen: one still starting may not handle SIGHUP yet (it would
        # die of it), and it reads the file as it is now anyway.
        for worker in ready:
            self._signal(worker, signal.SIGHUP)

    async def _keep(self, index: int) -> None:
        failures = 0  # consecutive deaths before listening
        while not self._stopping.is_set():
            try:
                worker = await self._start(index)
            except OSError as exc:  # no more processes or memory: nothing a retry would fix
                log.error("cannot start worker %d: %s", index, exc)
                self._status = 1
                self.stop()
                return
            ready = await self._until_ready(worker)
            code = await worker.process.wait()
            self._reap(worker)
            if self._stopping.is_set():
                self._check_stopped(worker, code)
                return
            failures = 0 if ready else failures + 1
            how = f"exited with {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
            if failures >= self._start_attempts:
                log.error(
                    "worker %d (pid %d) %s before listening, %d times in a row: giving up",
                    index,
                    worker.process.pid,
                    how,
                    failures,
                )
                self._status = 1
                self.stop()
                return
            delay = min(self._backoff_s * 2 ** max(failures - 1, 0), self._max_backoff_s)
            log.warning(
                "worker %d (pid %d) %s %s; restarting it in %.1f s",
                index,
                worker.process.pid,
                how,
                "while serving" if ready else "before listening",
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _start(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            # Its own process group: a Ctrl-C in the terminal reaches the supervisor only,
            # which stops the workers once, in order.
            process = await asyncio.create_subprocess_exec(
                *self._command(index), stdin=theirs.fileno(), env=self._env, process_group=0
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        worker = self._workers[index] = _Worker(index, process, ours)
        log.info("worker %d started (pid %d)", index, process.pid)
        if self._stopping.is_set():  # stopped while it was being spawned
            self._signal(worker, signal.SIGTERM)
        return worker

    async def _until_ready(self, worker: _Worker) -> bool:
        """Whether the worker came to listen (False: it exited first)."""
        try:
            said = await asyncio.get_running_loop().sock_recv(worker.control, len(_READY))
        except OSError:
            said = b""
        if said != _READY:
            return False
        worker.ready = True
        log.info("worker %d (pid %d) listening", worker.index, worker.process.pid)
        listening = sum(w.ready for w in self._workers.values())
        if not self.listening.is_set() and listening == self._count:
            self.listening.set()
            log.info("all %d workers listening", self._count)
        return True

    def _reap(self, worker: _Worker) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        worker.control.close()
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
        # Its live gauges (in-flight requests...) leave the sums; its counters stay counted.
        mark_process_dead(worker.process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]

    def _check_stopped(self, worker: _Worker, code: int) -> None:
        # A worker stopped before it set up its handlers dies of the SIGTERM: nothing to drain.
        if code == 0 or (not worker.ready and code == -signal.SIGTERM):
            return
        log.error("worker %d (pid %d) stopped with %s", worker.index, worker.process.pid, code)
        self._status = 1

    @staticmethod
    def _signal(worker: _Worker, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited: reaped soon
            worker.process.send_signal(signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# The worker side: what `spendgate serve --worker i/N` runs.


def run_worker(
    config: Config, path: str | None, host: str, port: int, slot: WorkerSlot, metrics_dir: str
) -> int:
    """Serve the app as worker `slot` until SIGTERM/SIGINT or the supervisor goes away."""
    from gateway.app.server import create_app
    from gateway.logs import AccessWriter
    from gateway.metrics import Metrics

    metrics = Metrics(multiprocess_dir=metrics_dir)
    app = create_app(
        config, path, metrics, worker=slot, access_writer=AccessWriter(), freeze_heap=True
    )
    try:
        asyncio.run(_serve(app, host, port))
    except PortUnavailable as exc:  # taken since the supervisor checked it
        log.error("%s", exc.message(GATEWAY_PORT_OPTION))
        return 1
    return 0


async def _serve(app: web.Application, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(_CONTROL_FD, _on_control, loop, stop)

    def listening(_: int) -> None:  # tell the supervisor
        with contextlib.suppress(OSError):  # it is gone: _on_control stops us
            os.write(_CONTROL_FD, _READY)

    try:
        await serve_app(app, host, port, on_listening=listening, stop=stop, reuse_port=True)
    finally:
        loop.remove_reader(_CONTROL_FD)


def _on_control(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    try:
        data = os.read(_CONTROL_FD, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        loop.remove_reader(_CONTROL_FD)
        if not stop.is_set():
            log.warning("the supervisor is gone: stopping this worker")
            stop.set()
