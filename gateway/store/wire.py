"""One pipelined connection to a Redis server, for the commands of the request path.

redis-py's command path (pool checkout, retry wrapper, per-command coroutine, response
callbacks, pool release) costs about 80 us of CPU per round trip on this project's hardware,
more than Redis takes to answer: under load it was a quarter of the gateway's CPU. Here a
batch of commands is packed by hiredis into one write, and replies are parsed by hiredis as
they arrive and handed to their callers' futures in order: no task, no coroutine per command.

Only for servers reached directly (`redis://`, `rediss://`, `unix://`) and the primaries of a
Redis Cluster (one wire each, `cluster.Router`); the connection options (address, TLS,
credentials, database, client name) are those of the redis-py client's pool, so one URL means
the same server either way. Sentinel and the embedded store keep redis-py.

Replies are raw: bytes, ints, lists, None; a status reply is its bytes (b"OK"). An error reply
is a `ResponseError` (`NoScriptError` for NOSCRIPT) for its own caller only. When the connection
fails, every caller waiting on it gets a redis `ConnectionError` (a command may have run or not:
callers that move money spool and replay by id); the next batch connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hiredis
from redis.asyncio.connection import (
    AbstractConnection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    import ssl

    from redis.asyncio import Redis

_CLOSE_WAIT_S = 2.0  # at shutdown, for the replies still outstanding
# Options a cluster's connection kwargs carry for its pools, not for a connection.
_POOL_ONLY = frozenset({"max_connections", "connection_class"})

Command = tuple[Any, ...]
Waiter = asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class Address:
    """Where and how to connect: host and port, or a unix socket path; TLS; the handshake."""

    host: str | None
    port: int
    path: str | None
    ssl: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    client_name: str | None
    connect_timeout_s: float | None
    keepalive: bool

    @classmethod
    def of(cls, redis: Redis) -> Address | None:
        """Where the connections of `redis`'s pool go (a pool of one server reached directly),
        if it speaks RESP2 with fixed credentials; else None: keep redis-py."""
        pool = redis.connection_pool
        return cls.from_kwargs(pool.connection_class, pool.connection_kwargs)

    @classmethod
    def from_kwargs(
        cls, connection_class: type[AbstractConnection], kwargs: Mapping[str, Any]
    ) -> Address | None:
        """The address redis-py's `connection_class(**kwargs)` would connect to (a pool's, or a
        cluster node's: `cluster.Router`), if it speaks RESP2 with fixed credentials."""
        if kwargs.get("credential_provider") is not None or kwargs.get("protocol") in (3, "3"):
            return None
        unix = issubclass(connection_class, UnixDomainSocketConnection)
        context = None
        if issubclass(connection_class, SSLConnection):
            # redis-py's own translation of the ssl_* options into a context.
            options = {k: v for k, v in kwargs.items() if k not in _POOL_ONLY}
            context = connection_class(**options).ssl_context.get()
        return cls(
            host=None if unix else kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path") if unix else None,
            ssl=context,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            db=int(kwargs.get("db", 0) or 0),
            client_name=kwargs.get("client_name"),
            connect_timeout_s=kwargs.get("socket_connect_timeout"),
            keepalive=bool(kwargs.get("socket_keepalive")),
        )

    def handshake(self) -> list[Command]:
        commands: list[Command] = []
        if self.password is not None:
            user = (self.username,) if self.username else ()
            commands.append(("AUTH", *user, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        return commands


class _Link(asyncio.Protocol):
    """One connection of a Wire: it hands what arrives, or its end, to the wire."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.reader = hiredis.Reader(replyError=ResponseError)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.wire._received(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wire._lost(self, exc)


class Wire:
    """Batches of commands in, replies out in order, over one connection opened on demand."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._transport: asyncio.WriteTransport | None = None
        self._link: _Link | None = None  # the connection in use; an older one's end is ignored
        self._waiting: deque[Waiter] = deque()  # one per command written, oldest first
        self._queued: list[tuple[Command, Waiter]] = []  # while connecting
        self._connecting: asyncio.Task[None] | None = None
        self._ready = False  # connected and through the handshake
        self._closed = False

    def send(self, batch: Sequence[tuple[Command, Waiter]]) -> None:
        """Write the batch now (one write), or as soon as the connection is up."""
        if self._closed:
            _fail(batch, RedisConnectionError("the store connection is closed"))
            return
        if not self._ready:
            self._queued.extend(batch)
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        self._write(batch)

    async def drain(self) -> None:
        """Until every command written or queued so far has its reply (or failed)."""
        pending = [w for w in self._waiting if not w.done()]
        pending += [w for _, w in self._queued if not w.done()]
        if self._connecting is not None:
            await asyncio.gather(self._connecting, return_exceptions=True)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self, wait_s: float = _CLOSE_WAIT_S) -> None:
        """Wait up to `wait_s` for the replies outstanding, then close; a command still without
        a reply then fails with a ConnectionError."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.drain()
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._give_up(RedisConnectionError("the store connection is closed"))

    # from the connection

    def _received(self, link: _Link) -> None:
        if link is not self._link:
            return
        reader = link.reader
        waiting = self._waiting
        while waiting and (reply := reader.gets()) is not False:
            waiter = waiting.popleft()
            if waiter.done():  # its caller stopped waiting; the command ran all the same
                continue
            if isinstance(reply, ResponseError):
                if str(reply).startswith("NOSCRIPT"):
                    reply = NoScriptError(str(reply))
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._transport, self._link, self._ready = None, None, False
        waiting, self._waiting = list(self._waiting), deque()
        reason = f": {exc}" if exc else ""
        _fail([(None, w) for w in waiting], RedisConnectionError(f"store connection lost{reason}"))

    # inside

    def _write(self, batch: Sequence[tuple[Command, Waiter]]) -> None:
        assert self._transport is not None
        packed = []
        for args, waiter in batch:
            try:
                packed.append(hiredis.pack_command(args))
            except TypeError as exc:  # an argument hiredis cannot send (None, a bool...)
                if not waiter.done():
                    waiter.set_exception(exc)
                continue
            self._waiting.append(waiter)
        self._transport.write(b"".join(packed))

    async def _connect(self) -> None:
        address = self.address
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(address.connect_timeout_s):  # the handshake included
                link = _Link(self)
                if address.path is not None:
                    transport, _ = await loop.create_unix_connection(
                        lambda: link, address.path, ssl=address.ssl
                    )
                else:
                    transport, _ = await loop.create_connection(
                        lambda: link, address.host or "localhost", address.port, ssl=address.ssl
                    )
                self._transport, self._link = transport, link  # closed by a failure below
                sock = transport.get_extra_info("socket")
                if sock is not None and address.path is None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if address.keepalive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                handshake = [(c, loop.create_future()) for c in address.handshake()]
                if handshake:
                    self._write(handshake)
                    for _, waiter in handshake:
                        await waiter  # a refused AUTH or SELECT fails what was queued
        except (OSError, TimeoutError, ResponseError, RedisConnectionError) as exc:
            self._give_up(
                RedisConnectionError(f"cannot reach the store: {exc or type(exc).__name__}")
            )
            return
        except asyncio.CancelledError:
            self._give_up(RedisConnectionError("the store connection is closed"))
            raise
        finally:
            self._connecting = None
        self._ready = True
        queued, self._queued = self._queued, []
        if queued:
            self._write(queued)

    def _give_up(self, exc: Exception) -> None:
        """Close the connection and fail every command queued or waiting on it."""
        if self._transport is not None:
            self._transport.close()
        self._transport, self._link, self._ready = None, None, False
        queued, self._queued = self._queued, []
        _fail(queued, exc)
        waiting, self._waiting = list(self._waiting), deque()
        _fail([(None, w) for w in waiting], exc)


def _fail(batch: Sequence[tuple[Any, Waiter]], exc: Exception) -> None:
    for _, waiter in batch:
        if not waiter.done():
            waiter.set_exception(exc)
