"""The local store's aggregator as a child process of `spendgate serve` (of the supervisor with
`--workers N`), so that consuming the spend stream never takes CPU from the request path.

The child is `spendgate aggregate --config <the gateway's file>` with a hidden option that lets
it use the gateway's local store and serve its metrics on a unix socket beside the store's (the
gateway's /metrics merges them in: `fetch_metrics`). Its stdin is a pipe the parent holds: when
the parent dies, the child reads end-of-file and stops. The parent restarts a child that dies
(after a backoff), and stops it (SIGTERM: it finishes the batch in flight) before the store.
It starts once the gateway listens (`running_once`): where the two share a core, its
start-up (half a second of imports) would otherwise delay the gateway's first served request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from gateway.childprocess import SupervisedChild
from gateway.store.server import socket_path

log = logging.getLogger("spendgate.aggregator")

METRICS_SOCKET_FILE = "aggregator.sock"
CHILD_OPTION = "--gateway-child"  # the hidden option of `spendgate aggregate`
_SCRAPE_TIMEOUT_S = 2.0


def aggregator_socket(data_dir: str | os.PathLike[str]) -> Path:
    """Where the aggregator of the local store in `data_dir` serves its metrics."""
    return socket_path(Path(data_dir).absolute(), METRICS_SOCKET_FILE)


class AggregatorChild(SupervisedChild):
    """`start`, then `stop`; restarted meanwhile whenever it exits."""

    name = "the aggregator"
    backoff_s = (0.5, 10.0)
    stop_timeout_s = 15.0  # it stops after the batch in flight

    def __init__(self, config_path: str, metrics_socket: Path, log_level: str = "INFO") -> None:
        super().__init__(log)
        self.config_path = config_path
        self.metrics_socket = metrics_socket
        self.log_level = log_level

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "gateway", "aggregate", "--config", self.config_path),
            *("--log-level", self.log_level, CHILD_OPTION, str(self.metrics_socket)),
        ]

    async def start(self) -> None:
        await self._spawn()
        self._watch_it()

    async def stop(self) -> None:
        await self._stop_it()
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()

    @asynccontextmanager
    async def running_once(self, listening: asyncio.Event) -> AsyncIterator[None]:
        """Start the child once `listening` is set (the gateway's port bound), and stop it on
        the way out, whether it got to start or not. The spend events it reads wait in their
        streams meanwhile."""

        async def start() -> None:
            await listening.wait()
            try:
                await self.start()
            except OSError as exc:  # no more processes or memory
                log.error("the aggregator could not be started: %s", exc)

        starting = asyncio.get_running_loop().create_task(start())
        try:
            yield
        finally:
            if not listening.is_set():
                starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self.stop()

    async def _spawn(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()  # the previous child's
        self._process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,  # its end-of-file tells the child we are gone
            # Its own process group: a Ctrl-C reaches the gateway, which stops it in order.
            start_new_session=True,
        )
        log.info("aggregator started as a child process (pid %d)", self._process.pid)


async def fetch_metrics(metrics_socket: Path) -> bytes:
    """The child's metrics in the text format, or b"" while it is not there (starting, or
    being restarted): the gateway's own metrics are served regardless."""
    try:
        connector = aiohttp.UnixConnector(path=str(metrics_socket))
        timeout = aiohttp.ClientTimeout(total=_SCRAPE_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get("http://aggregator/metrics") as response,
        ):
            if response.status != 200:
                return b""
            return await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("aggregator metrics unavailable: %s", exc)
        return b""
