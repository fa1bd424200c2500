"""CommandBatcher against a real Redis, over both of its paths (its own pipelined connection for
a server reached directly, a redis-py pipeline otherwise): one round trip per loop turn, replies
in order, an error reply to its own caller only, a dead connection to every caller, a caller
that left skipped. Then what only the own connection does: reconnecting, the handshake (ACL
user, database), a bounded close, and one batcher per client."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.store.batch import CommandBatcher, within
from gateway.store.connect import batcher_for, close_store, open_store
from gateway.store.wire import Wire
from tests.conftest import _free_port as free_port
from tests.conftest import local_store


def db_url(real_redis_url: str, db: int, userinfo: str = "") -> str:
    parts = urlsplit(real_redis_url)
    netloc = f"{userinfo}@{parts.netloc}" if userinfo else parts.netloc
    return parts._replace(netloc=netloc, path=f"/{db}").geturl()


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    client = await open_store(db_url(real_redis_url, 14))
    await client.flushdb()
    yield client
    await client.flushdb()
    await close_store(client)


@pytest.fixture(params=["wire", "redis-py"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def batcher(redis: Redis, path: str) -> CommandBatcher:
    return batcher_for(redis) if path == "wire" else CommandBatcher(redis)


def count_round_trips(redis: Redis, path: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Commands per round trip from now on: writes on the own connection, else pipelines and
    lone commands through redis-py."""
    trips: list[int] = []
    if path == "wire":
        write = Wire._write

        def counting_write(self: Wire, batch: Any) -> None:
            trips.append(len(batch))
            write(self, batch)

        monkeypatch.setattr(Wire, "_write", counting_write)
        return trips
    make, execute = redis.pipeline, redis.execute_command

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        run = pipe.execute

        async def counting_execute(*a: Any, **k: Any) -> Any:
            trips.append(len(pipe.command_stack))
            return await run(*a, **k)

        pipe.execute = counting_execute  # type: ignore[method-assign]
        return pipe

    async def counting_command(*args: Any, **kwargs: Any) -> Any:
        trips.append(1)
        return await execute(*args, **kwargs)

    monkeypatch.setattr(redis, "pipeline", counting_pipeline)
    monkeypatch.setattr(redis, "execute_command", counting_command)
    return trips


async def test_one_turn_is_one_round_trip_with_replies_in_order(
    redis: Redis, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batcher(redis, path)
    await batch.execute("PING")  # the own connection's first batch waits for the handshake
    trips = count_round_trips(redis, path, monkeypatch)
    sets = [batch.execute("SET", f"k{i}", f"v{i}") for i in range(50)]
    gets = [batch.execute("GET", f"k{i}") for i in range(50)]
    assert all(await asyncio.gather(*sets))  # b"OK" raw, True through redis-py
    assert await asyncio.gather(*gets) == [f"v{i}".encode() for i in range(50)]
    assert trips == [100]
    assert await batch.execute("GET", "k7") == b"v7"  # a later turn is a batch of its own
    assert trips == [100, 1]


async def test_an_error_reply_reaches_only_its_caller(redis: Redis, path: str) -> None:
    await redis.set("text", "x")
    batch = batcher(redis, path)
    before = batch.execute("INCR", "n")
    wrong = batch.execute("LPUSH", "text", "y")  # WRONGTYPE
    after = batch.execute("INCR", "n")
    assert await before == 1 and await after == 2
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await wrong
    alone = batch.execute("LPUSH", "text", "y")  # the one-command path too
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await alone
    with pytest.raises(NoScriptError):  # what the ledger reloads its scripts on
        await batch.execute("EVALSHA", "0" * 40, 0)


async def test_a_burst_of_noscripts_loads_the_script_once(
    redis: Redis, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a store restarted empty (SCRIPT FLUSH here) every caller of the burst gets its
    answer, and the script is loaded once, not once per caller."""
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    batch = batcher(redis, path)
    assert await batch.evalsha(script, ["n"], []) == 1
    await redis.script_flush()
    loads: list[str] = []
    load = redis.script_load

    async def counting_load(text: str) -> str:
        loads.append(text)
        return await load(text)

    monkeypatch.setattr(redis, "script_load", counting_load)
    replies = await asyncio.gather(*(batch.evalsha(script, ["n"], []) for _ in range(200)))
    assert sorted(replies) == list(range(2, 202))
    assert loads == [script.script]


async def test_a_dead_server_fails_every_caller(path: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    client = await open_store(f"redis://127.0.0.1:{port}/0")
    try:
        batch = batcher(client, path)
        calls = [batch.execute("GET", f"k{i}") for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await close_store(client)


async def test_a_caller_that_left_does_not_disturb_the_others(redis: Redis, path: str) -> None:
    batch = batcher(redis, path)
    gone = batch.execute("SET", "a", "1")
    kept = batch.execute("GET", "a")
    gone.cancel()
    assert await kept == b"1"  # the SET still ran: only its reply was dropped
    queued = batch.execute("SET", "b", "2")
    await batch.drain()  # sends what is queued
    assert queued.result() and await redis.get("b") == b"2"


async def test_a_command_past_its_time_fails_alone_and_its_late_reply_is_dropped(
    redis: Redis, path: str
) -> None:
    batch = batcher(redis, path)
    assert await within(batch.execute("INCR", "a"), 1.0) == 1
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(batch.execute("BLPOP", "empty", 0.5), 0.05)  # Redis answers in 0.5 s
    assert time.monotonic() - started < 0.4
    # The next reply in line is the BLPOP's nil: it is dropped, this GET gets its own.
    assert await within(batch.execute("GET", "a"), 5.0) == b"1"


async def test_a_lost_connection_fails_its_callers_and_the_next_batch_reconnects(
    redis: Redis,
) -> None:
    batch = batcher_for(redis)
    assert await batch.execute("CLIENT", "SETNAME", "sg-wire-under-test") == b"OK"
    blocked = batch.execute("BLPOP", "nothing-comes", 0)  # waits until the connection dies
    clients = (await redis.execute_command("CLIENT", "LIST")).decode().splitlines()
    (wire_id,) = [
        fields["id"]
        for fields in (dict(f.split("=", 1) for f in line.split() if "=" in f) for line in clients)
        if fields.get("name") == "sg-wire-under-test"
    ]
    assert await redis.execute_command("CLIENT", "KILL", "ID", wire_id) == 1
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await batch.execute("SET", "after", "1") == b"OK"
    assert await redis.get("after") == b"1"


async def test_the_end_of_an_old_connection_leaves_the_new_one_alone(redis: Redis) -> None:
    batch = batcher_for(redis)
    wire = batch._wire
    assert wire is not None
    assert await batch.execute("PING") == b"PONG"
    old = wire._link
    await wire.aclose()  # as a failure would: the connection is closed, its end comes later
    wire._closed = False
    assert await batch.execute("PING") == b"PONG"  # a new connection
    assert old is not None and wire._link is not old
    pending = batch.execute("SET", "still", "here")
    old.connection_lost(None)  # the old connection's end, arriving late
    assert await pending == b"OK"


async def test_the_handshake_authenticates_and_selects_the_database(
    real_redis_url: str, redis: Redis
) -> None:
    await redis.execute_command("ACL", "SETUSER", "sg-wire", "on", ">s3cret-pw", "~*", "+@all")
    try:
        client = await open_store(db_url(real_redis_url, 14, "sg-wire:s3cret-pw"))
        try:
            assert await batcher_for(client).execute("SET", "who", "wire") == b"OK"
            assert await redis.get("who") == b"wire"  # db 14: the fixture's database
            assert await batcher_for(client).execute("ACL", "WHOAMI") == b"sg-wire"
        finally:
            await close_store(client)
        client = await open_store(db_url(real_redis_url, 14, "sg-wire:wrong-pw"))
        try:
            with pytest.raises(RedisConnectionError, match="WRONGPASS") as refused:
                await batcher_for(client).execute("GET", "who")
            assert "wrong-pw" not in str(refused.value)
        finally:
            await close_store(client)
    finally:
        await redis.execute_command("ACL", "DELUSER", "sg-wire")


async def test_closing_waits_for_a_hung_server_only_so_long(silent_port: int) -> None:
    client = await open_store(f"redis://127.0.0.1:{silent_port}/0?socket_connect_timeout=0.2")
    try:
        with pytest.raises(RedisConnectionError, match="cannot reach the store"):
            await batcher_for(client).execute("GET", "k")  # the handshake never answered
    finally:
        async with asyncio.timeout(5):
            await close_store(client)


async def test_one_batcher_per_client_and_redis_py_where_there_is_no_direct_server(
    redis: Redis,
) -> None:
    assert batcher_for(redis) is batcher_for(redis)
    assert batcher_for(redis)._wire is not None
    embedded = await open_store("memory://")
    try:
        assert batcher_for(embedded)._wire is None
        assert await batcher_for(embedded).execute("SET", "k", "v")
        assert await batcher_for(embedded).execute("GET", "k") == b"v"
    finally:
        await close_store(embedded)


async def test_a_later_command_goes_with_the_next_batch_or_on_its_own_soon(
    redis: Redis, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batcher(redis, path)
    await batch.execute("PING")
    trips = count_round_trips(redis, path, monkeypatch)
    written = batch.execute_later("SET", "cached", "1", within_s=3600)
    assert await batch.execute("GET", "cached") == b"1"  # the SET went first, in the same trip
    assert written.done() and trips == [2]
    alone = batch.execute_later("SET", "alone", "2", within_s=0.01)
    async with asyncio.timeout(5):  # nobody else sends: it goes by itself after its window
        assert await alone
    assert trips == [2, 1] and await redis.get("alone") == b"2"


async def test_an_argument_that_cannot_be_sent_fails_only_its_command(redis: Redis) -> None:
    batch = batcher_for(redis)
    bad = batch.execute("SET", "k", None)
    gone = batch.execute("SET", "k2", None)
    gone.cancel()  # its caller left before the batch went: nothing to tell it
    good = batch.execute("SET", "k", "v")
    with pytest.raises(TypeError):
        await bad
    assert await good == b"OK" and await redis.get("k") == b"v"


@pytest.fixture(scope="module")
def tls_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that speaks only TLS (a self-signed certificate for localhost), as a
    `rediss://` URL that verifies it."""
    redis_server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if redis_server is None or openssl is None:
        pytest.skip("needs redis-server and openssl")
    where = tmp_path_factory.mktemp("tls-redis")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *(redis_server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(where)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        yield f"rediss://localhost:{port}/0?ssl_ca_certs={cert}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["unix", "rediss"])
async def socket_or_tls(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A client of a server reached over a unix socket (the local store's) or over TLS."""
    if request.param == "unix":
        async with local_store(request) as client:
            yield client
        return
    client = await open_store(request.getfixturevalue("tls_redis_url"))
    try:
        yield client
    finally:
        await close_store(client)


async def test_unix_sockets_and_tls_get_the_pipelined_wire(
    socket_or_tls: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's URL parser names its own connection class for unix:// and rediss://; the
    request path must still get its own connection there (the local store is a unix socket)."""
    batch = batcher_for(socket_or_tls)
    assert await batch.execute("PING") == b"PONG"
    trips = count_round_trips(socket_or_tls, "wire", monkeypatch)
    sets = [batch.execute("SET", f"k{i}", f"v{i}") for i in range(20)]
    gets = [batch.execute("GET", f"k{i}") for i in range(20)]
    assert await asyncio.gather(*sets) == [b"OK"] * 20
    assert await asyncio.gather(*gets) == [f"v{i}".encode() for i in range(20)]
    assert trips == [40]
    assert await socket_or_tls.get("k3") == b"v3"  # the same server through redis-py's pool
