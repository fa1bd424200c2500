"""The upstream HTTP/1.1 client: keep-alive connections per origin, each request one write, each
response parsed straight from the socket's buffer (Content-Length, chunked, or to the close).

aiohttp's ClientSession spent about 130 us of a proxied request on this box (timers, payload
registry, a task per request body, tracing hooks, cookie and redirect handling), more than the
rest of the gateway's per-request work together; here an ordinary response is one write, one
`data_received` and one future. What upstream LLM APIs need is kept: TLS with the system's CAs,
gzip/deflate bodies, chunked streams handed on as they arrive, a connect timeout, a read timeout
(for the first byte and then every gap in a stream) and a total one, and one retry on a fresh
connection when a kept-alive one turns out to have been closed by the server before answering.
No proxies, redirects or cookies: nothing an API call to an LLM provider uses.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlencode, urlsplit

_MAX_HEAD = 64 * 1024  # bytes of status line and headers
_MAX_IDLE = 512  # idle connections kept per origin: a burst of calls should not reconnect
_IDLE_S = 30.0  # an idle connection older than this is closed rather than reused


class Http1Error(ConnectionError):
    """The upstream broke the exchange: closed early, or answered something that is not
    HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider's requests go, prepared once: origin, path prefix and the fixed head."""

    scheme: str
    host: str
    port: int
    prefix: bytes  # the base URL's path, no trailing slash
    query: bytes  # "?api-version=..." or b""
    fixed_head: bytes  # Host, fixed headers and the final-line-less header block

    @classmethod
    def of(
        cls, base_url: str, headers: Mapping[str, str], params: Mapping[str, str] | None = None
    ) -> Endpoint:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream base URL must be http(s)://host[:port][/path]: {base_url}")
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        authority = host if ":" not in host else f"[{host}]"
        if port != default:
            authority += f":{port}"
        lines = [f"Host: {authority}", "Accept-Encoding: gzip, deflate", "Connection: keep-alive"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("upstream headers may not contain line breaks")
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            prefix=parts.path.rstrip("/").encode(),
            query=("?" + urlencode(params)).encode() if params else b"",
            fixed_head="".join(f"{line}\r\n" for line in lines).encode("latin-1"),
        )

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    read_s: float  # to the first byte, then between any two reads
    total_s: float


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes received wait in a buffer until a reader takes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.eof = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float) -> None:
        """Until more bytes arrive or the peer closes; TimeoutError at `deadline`."""
        if self.eof:
            raise Http1Error("the upstream closed the connection mid-response")
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """A response whose head is read; its body is read with `read()` or iterated with
    `chunks()`, exactly once. `release()` gives the connection back (or closes it)."""

    def __init__(
        self,
        client: Http1Client,
        endpoint: Endpoint,
        conn: _Connection,
        status: int,
        headers: dict[str, str],
        keep_alive: bool,
        timeouts: Timeouts,
        deadline: float,
    ) -> None:
        self._client, self._endpoint, self._conn = client, endpoint, conn
        self.status, self.headers = status, headers
        self._keep_alive = keep_alive
        self._timeouts, self._deadline = timeouts, deadline
        self._done = False  # the body was read to its end
        self._released = False
        encoding = headers.get("content-encoding", "").lower()
        self._inflate = zlib.decompressobj(47) if encoding in ("gzip", "deflate") else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    async def read(self) -> bytes:
        parts = [piece async for piece in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from chunked and gzip)."""
        inflate = self._inflate
        async for piece in self._raw():
            if inflate is not None:
                piece = inflate.decompress(piece)
                if not piece:
                    continue
            yield piece
        if inflate is not None and (tail := inflate.flush()):
            yield tail

    async def _raw(self) -> AsyncIterator[bytes]:
        conn, headers = self._conn, self.headers
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._done = True
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            async for piece in self._chunked():
                yield piece
        elif (length := headers.get("content-length")) is not None:
            remaining = _content_length(length)
            while remaining:
                if not conn.buffer:
                    await self._more()
                piece = bytes(conn.buffer[:remaining])
                del conn.buffer[: len(piece)]
                remaining -= len(piece)
                yield piece
        else:  # no length: the body ends when the server closes
            self._keep_alive = False
            while True:
                if conn.buffer:
                    piece = bytes(conn.buffer)
                    conn.buffer.clear()
                    yield piece
                elif conn.eof:
                    break
                else:
                    await self._more(eof_ok=True)
        self._done = True

    async def _chunked(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            while (end := conn.buffer.find(b"\r\n")) < 0:
                await self._more()
            size_text = bytes(conn.buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Http1Error(f"bad chunk size from the upstream: {size_text[:20]!r}") from None
            del conn.buffer[: end + 2]
            if size == 0:  # trailers (usually none) end with an empty line
                while (end := conn.buffer.find(b"\r\n")) != 0:
                    if end > 0:
                        del conn.buffer[: end + 2]
                    else:
                        await self._more()
                del conn.buffer[:2]
                return
            while size:  # hand on what is there: an SSE event need not wait for its chunk
                if not conn.buffer:
                    await self._more()
                piece = bytes(conn.buffer[:size])
                del conn.buffer[: len(piece)]
                size -= len(piece)
                yield piece
            while len(conn.buffer) < 2:
                await self._more()
            del conn.buffer[:2]

    async def _more(self, eof_ok: bool = False) -> None:
        if self._conn.eof:
            if eof_ok:
                return
            raise Http1Error("the upstream closed the connection mid-response")
        deadline = min(self._deadline, self._client.loop.time() + self._timeouts.read_s)
        await self._conn.wait(deadline)

    def release(self) -> None:
        """Done with the response: a fully read, kept-alive connection goes back to the pool."""
        if self._released:
            return
        self._released = True
        if self._done and self._keep_alive and not self._conn.buffer and not self._conn.eof:
            self._client.put_back(self._endpoint, self._conn)
        else:
            self._conn.close()


class Http1Client:
    """Connections to every upstream origin of this process; close with `aclose()`. A response
    still being read then (a batch or a stream that outlived the app) closes its connection
    when released instead of pooling it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def post(
        self, endpoint: Endpoint, path: str, body: bytes, timeouts: Timeouts
    ) -> Response:
        """POST `body` to the endpoint's base URL + `/path`; returns once the head is in.
        Raises TimeoutError, OSError (connect) or Http1Error."""
        now = self.loop.time()
        deadline = now + timeouts.total_s
        head = b"".join(
            (
                b"POST ",
                endpoint.prefix,
                b"/",
                path.encode(),
                endpoint.query,
                b" HTTP/1.1\r\n",
                endpoint.fixed_head,
                b"Content-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
            )
        )
        conn = self._take(endpoint)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(endpoint, timeouts, deadline)
            try:
                assert conn.transport is not None
                conn.transport.writelines((head, body))
                status, headers, keep_alive = await _read_head(
                    conn, min(deadline, self.loop.time() + timeouts.read_s)
                )
            except Http1Error:
                conn.close()
                if reused and not conn.buffer:  # closed by the server while idle: once more
                    conn, reused = None, False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, endpoint, conn, status, headers, keep_alive, timeouts, deadline)

    def _take(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint.origin)
        oldest = self.loop.time() - _IDLE_S
        while idle:
            conn = idle.pop()
            if not conn.eof and not conn.buffer and conn.idle_since >= oldest:
                return conn
            conn.close()
        return None

    def put_back(self, endpoint: Endpoint, conn: _Connection) -> None:
        idle = self._idle.setdefault(endpoint.origin, [])
        if self._closed or len(idle) >= _MAX_IDLE:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)

    async def _connect(
        self, endpoint: Endpoint, timeouts: Timeouts, deadline: float
    ) -> _Connection:
        tls = None
        if endpoint.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        limit = min(timeouts.connect_s, max(0.0, deadline - self.loop.time()))
        async with asyncio.timeout(limit):
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self.loop),
                endpoint.host,
                endpoint.port,
                ssl=tls,
                server_hostname=endpoint.host if tls else None,
            )
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _read_head(conn: _Connection, deadline: float) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-case names) and whether the connection may be kept, skipping
    1xx interim responses."""
    while True:
        while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            if len(conn.buffer) > _MAX_HEAD:
                raise Http1Error("the upstream's response head is too large")
            if conn.eof:
                raise Http1Error("the upstream closed the connection before answering")
            await conn.wait(deadline)
        head = bytes(conn.buffer[:end]).decode("latin-1")
        del conn.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise Http1Error(f"not an HTTP/1.x response from the upstream: {status_line[:60]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise Http1Error(f"bad header line from the upstream: {line[:60]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version != "HTTP/1.0" or "keep-alive" in connection
        )
        return status, headers, keep_alive


def _content_length(text: str) -> int:
    first = text.split(",")[0].strip()  # repeated identical values arrive joined
    if not first.isdigit():
        raise Http1Error(f"bad Content-Length from the upstream: {text[:20]!r}")
    return int(first)
