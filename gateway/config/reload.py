"""The live config: one reference to the current snapshot, swapped whole on a good reload.

Reloads come from a file watcher or SIGHUP. A file that fails to load, or that changes what
only a restart can apply (listen address, store, its data and spool directories, the cache's
Redis level), is refused: the running config stays, the reason is logged, and `on_result` is
told (the app counts it as a metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from gateway.config.loader import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError

Listener = Callable[[Config, Config], None]  # (old, new), called after a swap
ResultHook = Callable[[bool, str], None]  # (applied, "ok" | "invalid" | "restart_required" ...)

_Signature = tuple[int, int, int]  # (mtime_ns, size, inode)
_FAILED = "config reload failed, keeping the running config\n"


class LiveConfig:
    """Holds `current`; readers read it once per request and keep that snapshot."""

    def __init__(
        self,
        config: Config,
        path: str | os.PathLike[str] | None,
        *,
        on_result: ResultHook | None = None,
    ) -> None:
        self.current = config
        self.path = os.fspath(path) if path is not None else None
        self.listeners: list[Listener] = []
        self.on_result = on_result
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._log = logging.getLogger("spendgate.config")
        # The file as it was (about) when `config` was read from it: changes after this reload.
        self._seen = self._signature()

    def reload(self) -> bool:
        """Read the file again and swap it in if it is valid; False keeps the current config."""
        if self.path is None:
            return self._refuse("no_file", "reload skipped: the config was not read from a file")
        self._seen = self._signature()
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            return self._refuse("invalid", _FAILED + exc.render())
        return self._apply(config)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the file and reload when it changes; runs until cancelled.

        A change is acted on once the file has looked the same for one interval, so an editor
        still writing it is not caught half-way (which would log a spurious failed reload).
        """
        if self.path is None:
            return
        pending: _Signature | None = None
        while True:
            await asyncio.sleep(interval_s)
            signature = self._signature()
            if signature is None or signature == self._seen:
                pending = None  # unchanged, or mid-replace (missing): look again next time
            elif signature != pending:
                pending = signature
            else:
                pending = None
                await self._reload_in_thread(self.path, signature)

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP (the Unix convention); a no-op where there is no SIGHUP."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:
            return
        try:
            loop.add_signal_handler(sighup, self.reload)
        except (NotImplementedError, RuntimeError):  # Windows loops; not the main thread
            self._log.debug("SIGHUP reload is unavailable on this event loop")

    def remove_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sighup)

    async def _reload_in_thread(self, path: str, signature: _Signature) -> None:
        # Parsing and compiling take milliseconds: off the event loop, so requests don't wait.
        self._seen = signature
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self._refuse("invalid", _FAILED + exc.render())
            return
        if self._seen == signature:  # else a SIGHUP reload read a newer file meanwhile
            self._apply(config)

    def _apply(self, config: Config) -> bool:
        old = self.current
        restart = _restart_only_changes(old, config)
        if restart:
            return self._refuse(
                "restart_required",
                f"config reload refused, keeping the running config: {'; '.join(restart)} "
                "changed, which takes effect only after a restart of spendgate",
            )
        self.current = config
        self.reloads_ok += 1
        self._log.info(
            "config reloaded from %s: %d providers, %d models, %d teams",
            config.source,
            len(config.providers),
            len(config.models),
            len(config.teams),
        )
        for listener in list(self.listeners):
            try:
                listener(old, config)
            except Exception:
                # The swap is done; one broken component must not keep the others stale.
                self._log.exception("config listener %r failed after a reload", listener)
        if self.on_result is not None:
            self.on_result(True, "ok")
        return True

    def _refuse(self, reason: str, message: str) -> bool:
        self.reloads_failed += 1
        self._log.error("%s", message)
        if self.on_result is not None:
            self.on_result(False, reason)
        return False

    def _signature(self) -> _Signature | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    changes = []
    if old.server.host != new.server.host:
        changes.append(f"server.host ({old.server.host} -> {new.server.host})")
    if old.server.port != new.server.port:
        changes.append(f"server.port ({old.server.port} -> {new.server.port})")
    if old.store.url != new.store.url:
        changes.append("store.url")  # values not shown: a store URL may hold a password
    # Events spooled during an outage are replayed from this directory: moving it at run time
    # would strand them.
    if old.store.spool_dir != new.store.spool_dir:
        changes.append(f"store.spool_dir ({old.store.spool_dir} -> {new.store.spool_dir})")
    # The local store's server runs on the directory it started with.
    if old.store.data_dir != new.store.data_dir:
        changes.append(f"store.data_dir ({old.store.data_dir} -> {new.store.data_dir})")
    # The response cache picks its levels when the app starts; a reload would be ignored.
    if old.cache.use_redis != new.cache.use_redis:
        changes.append(f"cache.use_redis ({old.cache.use_redis} -> {new.cache.use_redis})")
    return changes
