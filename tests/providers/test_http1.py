"""The upstream HTTP/1.1 client over real sockets, against a scripted server: bodies by length,
chunked and to the close, gzip, keep-alive reuse, a kept-alive connection the server closed,
timeouts, and answers that are not HTTP."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.providers.http1 import Endpoint, Http1Client, Http1Error, Timeouts

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
TIMEOUTS = Timeouts(connect_s=2, read_s=2, total_s=5)


class Server:
    """Reads each request (head + Content-Length body) and answers with `reply`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if (task := asyncio.current_task()) is not None:
            self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.reply(request, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening, and end the connections still open (a reply that never finishes)."""
        assert self.server is not None
        self.server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()


Serve = Callable[[Reply], Awaitable[tuple["Server", Endpoint]]]


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    client = Http1Client()
    yield client
    await client.aclose()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[Server] = []

    async def start(reply: Reply) -> tuple[Server, Endpoint]:
        server = Server(reply)
        servers.append(server)
        url = await server.start()
        return server, Endpoint.of(url, {"Authorization": "Bearer sk-up", "X-Extra": "1"})

    yield start
    for server in servers:
        await server.close()


def fixed(status: str, body: bytes, *headers: str) -> Reply:
    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return reply


async def test_post_sends_one_well_formed_request_and_reuses_the_connection(
    serve: Serve, client: Http1Client
) -> None:
    server, endpoint = await serve(
        fixed("200 OK", b'{"ok": true}', "Content-Type: application/json")
    )
    for _ in range(3):
        response = await client.post(endpoint, "chat/completions", b'{"a": 1}', TIMEOUTS)
        assert (response.status, await response.read()) == (200, b'{"ok": true}')
        assert response.content_type == "application/json"
        response.release()
    assert server.connections == 1  # kept alive
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Authorization: Bearer sk-up" in lines and b"X-Extra: 1" in lines
    assert b"Content-Length: 8" in lines and body == b'{"a": 1}'
    assert any(line.startswith(b"Host: 127.0.0.1:") for line in lines)


async def test_a_response_released_after_the_client_closed_closes_its_connection(
    serve: Serve, client: Http1Client
) -> None:
    # The app's cleanup closes the client while a batch or a stream still reads a response:
    # released later, its connection must close, not go back to a pool nobody will close.
    _, endpoint = await serve(fixed("200 OK", b"{}"))
    response = await client.post(endpoint, "chat/completions", b"{}", TIMEOUTS)
    await client.aclose()
    assert await response.read() == b"{}"
    response.release()
    assert response._conn.closed
    assert not any(client._idle.values())


async def test_chunked_body_arrives_piece_by_piece(serve: Serve, client: Http1Client) -> None:
    release = asyncio.Event()

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6;ext=1\r\ndata: \r\n")
        await writer.drain()
        await release.wait()  # the client must see the first piece before the rest exists
        writer.write(b"3\r\none\r\n0\r\nTrailer: x\r\n\r\n")
        await writer.drain()

    server, endpoint = await serve(reply)
    response = await client.post(endpoint, "x", b"{}", TIMEOUTS)
    pieces = response.chunks()
    assert await anext(pieces) == b"data: "
    release.set()
    assert [piece async for piece in pieces] == [b"one"]
    response.release()
    again = await client.post(endpoint, "x", b"{}", TIMEOUTS)  # same connection, clean
    release.set()
    assert await again.read() == b"data: one"
    again.release()
    assert server.connections == 1


async def test_gzip_and_read_to_close(serve: Serve, client: Http1Client) -> None:
    packed = gzip.compress(b"x" * 10_000)

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n")
        writer.write(packed)
        await writer.drain()
        writer.close()

    server, endpoint = await serve(reply)
    for _ in range(2):
        response = await client.post(endpoint, "x", b"{}", TIMEOUTS)
        assert await response.read() == b"x" * 10_000
        response.release()
    assert server.connections == 2  # a body that ends at the close is never reused


async def test_a_kept_alive_connection_the_server_closed_is_retried_once(
    serve: Serve, client: Http1Client
) -> None:
    answered = 0

    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        answered += 1
        if answered == 2:  # the second request on the first connection: hang up unanswered
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server, endpoint = await serve(reply)
    first = await client.post(endpoint, "x", b"{}", TIMEOUTS)
    assert await first.read() == b"ok"
    first.release()
    second = await client.post(endpoint, "x", b"{}", TIMEOUTS)
    assert await second.read() == b"ok"
    second.release()
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_fresh_connection_closed_unanswered_is_an_error(
    serve: Serve, client: Http1Client
) -> None:
    async def reply(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, endpoint = await serve(reply)
    with pytest.raises(Http1Error, match="before answering"):
        await client.post(endpoint, "x", b"{}", TIMEOUTS)
    assert server.connections == 1  # not retried: nothing says a new one would fare better


async def test_read_timeout_before_the_head_and_between_pieces(
    serve: Serve, client: Http1Client
) -> None:
    async def silent(_: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    _, endpoint = await serve(silent)
    quick = Timeouts(connect_s=2, read_s=0.05, total_s=5)
    with pytest.raises(TimeoutError):
        await client.post(endpoint, "x", b"{}", quick)

    async def stalls(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.Event().wait()

    _, endpoint = await serve(stalls)
    response = await client.post(endpoint, "x", b"{}", quick)
    with pytest.raises(TimeoutError):
        await response.read()
    response.release()


async def test_not_http_and_truncated_bodies_are_errors(serve: Serve, client: Http1Client) -> None:
    async def garbage(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    _, endpoint = await serve(garbage)
    with pytest.raises(Http1Error, match="not an HTTP"):
        await client.post(endpoint, "x", b"{}", TIMEOUTS)

    async def short(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    _, endpoint = await serve(short)
    response = await client.post(endpoint, "x", b"{}", TIMEOUTS)
    with pytest.raises(Http1Error, match="mid-response"):
        await response.read()
    response.release()


async def test_connect_refused_is_an_oserror(client: Http1Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(OSError):
        await client.post(Endpoint.of(f"http://127.0.0.1:{port}", {}), "x", b"{}", TIMEOUTS)


def test_endpoint_prepares_the_head_and_refuses_bad_input() -> None:
    endpoint = Endpoint.of(
        "https://api.example.com/openai/", {"api-key": "k"}, {"api-version": "2024-10-21"}
    )
    assert (endpoint.scheme, endpoint.host, endpoint.port) == ("https", "api.example.com", 443)
    assert endpoint.prefix == b"/openai" and endpoint.query == b"?api-version=2024-10-21"
    assert endpoint.fixed_head.startswith(b"Host: api.example.com\r\n")
    with pytest.raises(ValueError, match="line breaks"):
        Endpoint.of("http://h", {"X": "a\r\nInjected: 1"})
    with pytest.raises(ValueError, match="http"):
        Endpoint.of("ftp://h/", {})
