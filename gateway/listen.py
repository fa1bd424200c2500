"""Listening on a TCP port, and the one line a user reads when that is not possible.

`serve` (one process or `--workers N`), `demo`, `mock-upstream` and the aggregator's metrics
endpoint all bind a port. A port that is taken (8080 is popular; a second demo finds 9911 busy)
must be reported as the port and the option that picks another, never as an OSError traceback;
so every bind goes through `start_site`, which raises `PortUnavailable`.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable

from aiohttp import web

# What a user changes when the gateway's own port is taken.
GATEWAY_PORT_OPTION = "--port (or server.port in the config)"
# Set by `serve_app` once the app's port is bound: what the app's helpers wait for to start.
LISTENING = web.AppKey("listening", asyncio.Event)
# After the app's own drain, how long aiohttp waits for handlers still running before it
# cancels them (none should be: the drain cut them).
_SHUTDOWN_BACKSTOP_S = 10.0


class PortUnavailable(Exception):
    """host:port cannot be listened on. `message(option)` is the line to print, naming the
    command line option (or setting) that chooses another port."""

    def __init__(
        self, host: str, port: int, reason: str, *, in_use: bool = False, privileged: bool = False
    ) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.in_use = in_use
        self.privileged = privileged  # another port (above 1024) would do

    @classmethod
    def of(cls, exc: OSError, host: str, port: int) -> PortUnavailable:
        if isinstance(exc, socket.gaierror):
            return cls(host, port, f"cannot resolve the host name {host!r}")
        if exc.errno == errno.EADDRINUSE:
            return cls(host, port, "already in use", in_use=True)
        if exc.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
            return cls(host, port, reason, privileged=True)
        if exc.errno == errno.EADDRNOTAVAIL:
            return cls(host, port, f"{host} is not an address of this machine")
        return cls(host, port, exc.strerror or str(exc))

    def message(self, option: str) -> str:
        if self.in_use:
            return (
                f"port {self.port} on {self.host} is already in use; choose another with {option}"
            )
        if self.privileged:
            return f"{self}; choose another port with {option}"
        return str(self)


def check_port(host: str, port: int) -> None:
    """Raise `PortUnavailable` when host:port cannot be listened on now, before anything is
    started. The probe binds without SO_REUSEPORT, so it also fails on a port that another
    spendgate's workers share (joining their group would silently split traffic with them)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortUnavailable.of(exc, host, port) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise PortUnavailable.of(exc, host, port) from None


async def start_site(
    runner: web.AppRunner, host: str, port: int, *, reuse_port: bool = False, backlog: int = 128
) -> int:
    """Listen with `runner` (set up, with no other site) on host:port and return the port bound
    (with port 0, the one the system chose). Raises `PortUnavailable`."""
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=backlog)
    try:
        await site.start()
    except OSError as exc:
        raise PortUnavailable.of(exc, host, port) from None
    return int(runner.addresses[0][1])


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_listening: Callable[[int], None],
    stop: asyncio.Event | None = None,
    reuse_port: bool = False,
) -> None:
    """What `web.run_app` does (start the app, listen, serve until SIGINT/SIGTERM or `stop`,
    then stop listening, run the app's on_shutdown (the gateway drains its requests there),
    give the requests still running 10 s more and clean up), except that a port that cannot be
    bound raises `PortUnavailable`, and `on_listening(port)` runs (and `app[LISTENING]`, if the
    app has one, is set) once it is bound."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=75.0, shutdown_timeout=_SHUTDOWN_BACKSTOP_S
    )
    try:
        await runner.setup()
        if not stop.is_set():
            on_listening(await start_site(runner, host, port, reuse_port=reuse_port))
            if LISTENING in app:
                app[LISTENING].set()
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
