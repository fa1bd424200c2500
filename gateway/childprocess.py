"""A child process that spendgate starts, restarts when it dies and stops: the local store's
server (`store.server`) and the local store's aggregator (`aggregator.child`).

A subclass says how to spawn one (`_spawn`, which sets `_process`) and which spawn failures are
worth retrying; this base keeps it running (backing off while restarts fail) and stops it
(SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging


class SupervisedChild:
    name = "child"  # for the log: "<name> exited with ..."
    backoff_s = (0.5, 10.0)  # the first restart's delay; the longest after failed ones
    stop_timeout_s = 30.0
    retried: tuple[type[Exception], ...] = (OSError,)  # spawn failures the watcher retries

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def _spawn(self) -> None:
        raise NotImplementedError

    def _exit_hint(self) -> str:
        """Appended to the log line of an unexpected exit: where to look."""
        return ""

    def _watch_it(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _stop_it(self) -> None:
        """Stop watching, then stop the process: SIGTERM, SIGKILL after `stop_timeout_s`."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await process.wait()
        except TimeoutError:
            self.log.error(
                "%s did not stop within %.0f s: killing it", self.name, self.stop_timeout_s
            )
            process.kill()
            await process.wait()

    async def _watch(self) -> None:
        delay, longest = self.backoff_s
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self.log.error(
                "%s exited with %s; restarting it in %.1f s%s",
                self.name,
                code,
                delay,
                self._exit_hint(),
            )
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except self.retried as exc:
                self.log.error("%s restart failed: %s", self.name, exc)
                delay = min(delay * 2, longest)
                continue
            self.restarts += 1
            delay = self.backoff_s[0]
            self.log.info("%s restarted (pid %d)", self.name, self._process.pid)
