"""The HTTP layer under what a well-behaved SDK never sends: requests aiohttp's parser refuses
(one line per connection, no traceback, counted) and a client that hangs up while still sending
its body (499 client_closed, nothing billed, nothing at error level). Raw bytes over a real
socket to the gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from gateway import rediskeys
from gateway.app.server import create_app
from gateway.app.state import KEYRING, METRICS, REDIS
from gateway.config.loader import load_config
from gateway.listen import start_site
from gateway.providers.mock import MockUpstream
from tests.app.test_billing import AccessLineWatcher
from tests.conftest import Gateway, metric_sum


class Records(logging.Handler):
    """Every record logged anywhere while a test runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, logger: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == logger]

    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture
def logged() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def exchange(gateway: Gateway, data: bytes) -> bytes:
    """Send `data`, then read until the gateway closes the connection."""
    assert gateway.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


GET = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"
TLS_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(32)


@pytest.mark.parametrize(
    ("data", "reason", "level"),
    [
        (GET + b"X-Trace: a\x01b\r\n\r\n", "bad_header", logging.WARNING),  # a control character
        (GET + b"X-A: 1\rX-B: 2\r\n\r\n", "bad_header", logging.WARNING),  # a bare CR
        (
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
            "line_too_long",
            logging.WARNING,
        ),
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n{}\r\n0\r\n\r\n",
            "bad_body",
            logging.WARNING,
        ),
        # TLS to the plain-HTTP port: routine on a public address, so info.
        (TLS_HELLO, "bad_method", logging.INFO),
    ],
    ids=["control-char", "bare-cr", "long-line", "bad-chunk", "tls"],
)
async def test_a_request_the_parser_refuses_is_one_line_and_counted(
    gateway: Gateway, logged: Records, data: bytes, reason: str, level: int
) -> None:
    answer = await exchange(gateway, data)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    (line,) = logged.of("spendgate.http")
    assert line.levelno == level and line.exc_info is None
    message = line.getMessage()
    assert f"from 127.0.0.1 ({reason}: " in message and "\n" not in message
    assert logged.errors() == []
    assert not logged.of("aiohttp.server")
    assert gateway.metric("sg_http_bad_requests_total", reason=reason) == 1
    assert gateway.metric("sg_http_bad_requests_total") == 1


async def test_one_connection_sends_several_bad_requests_and_is_logged_once(
    gateway: Gateway, logged: Records
) -> None:
    bad = GET + b"X-Trace: a\x01b\r\n\r\n"
    answer = await exchange(gateway, bad + bad + bad)
    assert answer.count(b" 400 Bad Request") == 1
    assert len(logged.of("spendgate.http")) == 1
    assert gateway.metric("sg_http_bad_requests_total") == 1
    assert logged.errors() == []


async def test_a_secret_in_a_refused_header_stays_out_of_the_log(
    gateway: Gateway, logged: Records
) -> None:
    key = gateway.keys["alpha"]
    await exchange(gateway, GET + f"Authorization: Bearer {key}\x01\r\n\r\n".encode())
    (line,) = logged.of("spendgate.http")
    assert key not in line.getMessage() and key[7:20] not in line.getMessage()


async def test_well_formed_requests_never_reach_the_server_log(
    gateway: Gateway, logged: Records
) -> None:
    answer = await exchange(gateway, GET + b"Connection: close\r\n\r\n")
    assert b"200 OK" in answer
    assert logged.of("spendgate.http") == [] and logged.errors() == []
    assert gateway.metric("sg_http_bad_requests_total") == 0


@dataclass
class Target:
    port: int
    app: web.Application
    key: str

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.app[METRICS].registry, name, **labels)


@pytest.fixture(params=["as-serve", "test-server"])
async def target(request: pytest.FixtureRequest, gateway: Gateway) -> AsyncIterator[Target]:
    """The gateway as `serve` runs it (aiohttp lets a handler run on when its client leaves),
    or as aiohttp's TestServer does (it cancels the handler)."""
    if request.param == "test-server":
        assert gateway.server.port is not None
        yield Target(gateway.server.port, gateway.app, gateway.keys["alpha"])
        return
    app = create_app(load_config(gateway.config_path), clock=gateway.clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        port = await start_site(runner, "127.0.0.1", 0)
        key, _ = await app[KEYRING].create("alpha", project="alpha-project")
        yield Target(port, app, key)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_client_that_hangs_up_mid_body_is_499_client_closed_and_billed_nothing(
    target: Target, mock_upstream: MockUpstream, logged: Records, chunked: bool
) -> None:
    watcher = AccessLineWatcher("client_closed")
    logging.getLogger("spendgate.access").addHandler(watcher)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {target.key}\r\n".encode()
    )
    part = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
    if chunked:
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(part), part)
    else:
        data = head + b"Content-Length: 1000\r\n\r\n" + part
    _, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(data)
    await writer.drain()
    writer.close()  # before the rest of the body
    try:
        async with asyncio.timeout(10):
            await watcher.seen.wait()
    finally:
        logging.getLogger("spendgate.access").removeHandler(watcher)
    (access,) = [r.access for r in logged.of("spendgate.access")]  # type: ignore[attr-defined]
    assert access["status"] == 499 and access["outcome"] == "client_closed"
    assert access["cost_usd"] == "0.000000000"
    assert target.metric("sg_requests_total", endpoint="chat/completions", status="499") == 1
    assert target.metric("sg_requests_total") == 1
    assert logged.errors() == []
    # Nothing went upstream and nothing reached the spend ledger.
    assert mock_upstream.requests == []
    redis = target.app[REDIS]
    assert await redis.smembers(rediskeys.streams_registry()) == set()
    assert await redis.xlen(rediskeys.events_stream("alpha")) == 0
