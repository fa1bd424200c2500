"""open_store / close_store for every URL scheme, and URL redaction."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio.connection import (
    BlockingConnectionPool,
    Connection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.store.connect import _SentinelUrl, close_store, is_embedded, open_store, redact_url


async def test_memory_store_runs_lua_and_is_private() -> None:
    a = await open_store("memory://")
    b = await open_store("memory://")
    try:
        assert await a.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "k", "v") == b"OK"
        assert await a.get("k") == b"v"
        assert await b.get("k") is None  # each embedded store has its own FakeServer
    finally:
        await close_store(a)
        await close_store(b)


@pytest.mark.parametrize(
    ("url", "embedded"),
    [
        ("memory://", True),
        ("MEMORY://", True),
        ("redis://localhost:6379/0", False),
        ("rediss://h/0", False),
        ("unix:///tmp/redis.sock", False),
        ("redis+sentinel://a:26379/mymaster", False),
    ],
)
def test_is_embedded(url: str, embedded: bool) -> None:
    assert is_embedded(url) is embedded


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("memory://", "memory://"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:s3cret@h/0?db=1", "redis://user:***@h/0?db=1"),
        ("rediss://s3cret@h", "rediss://***@h"),
        ("unix:///tmp/r.sock?db=2&password=s3cret", "unix:///tmp/r.sock?db=2&password=***"),
        (
            "redis+sentinel://:s3cret@a:1,b:2/mymaster/1?sentinel_password=s3cret",
            "redis+sentinel://:***@a:1,b:2/mymaster/1?sentinel_password=***",
        ),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert "s3cret" not in redact_url(url)


async def test_unsupported_scheme_is_refused_without_leaking_the_password() -> None:
    with pytest.raises(ValueError, match="unsupported store url") as info:
        await open_store("mongodb://:s3cret@h/0")
    assert "s3cret" not in str(info.value)


async def test_redis_url_gets_bounded_pool_timeouts_and_retries() -> None:
    # Nothing listens on port 1: building the client must do no I/O.
    r = await open_store("redis://127.0.0.1:1/3")
    try:
        pool = r.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        kwargs = pool.connection_kwargs
        assert kwargs["db"] == 3
        assert kwargs["socket_connect_timeout"] == 2.0
        # No per-command timeout or health-check PING (they cost every command a timer); the
        # request path bounds its own waits (tests/test_accounting.py).
        assert kwargs["socket_timeout"] is None
        assert kwargs["health_check_interval"] == 0
        assert kwargs["retry"].get_retries() == 3
        with pytest.raises(RedisConnectionError):
            await r.ping()
    finally:
        await close_store(r)


async def test_query_string_options_override_the_defaults() -> None:
    r = await open_store("redis://127.0.0.1:1/0?socket_timeout=30&max_connections=7")
    try:
        assert r.connection_pool.connection_kwargs["socket_timeout"] == 30.0
        assert r.connection_pool.max_connections == 7
    finally:
        await close_store(r)


async def test_unix_socket_url() -> None:
    r = await open_store("unix:///tmp/spendgate-test-nonexistent.sock?db=2")
    try:
        assert issubclass(r.connection_pool.connection_class, UnixDomainSocketConnection)
        assert r.connection_pool.connection_kwargs["db"] == 2
    finally:
        await close_store(r)


async def test_real_redis_round_trip(real_redis_url: str) -> None:
    url = urlsplit(real_redis_url)._replace(path="/15").geturl()
    r = await open_store(url)
    try:
        assert await r.ping() is True
        assert await r.eval("return 7", 0) == 7
    finally:
        await close_store(r)


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "0" * 40, 2, "sg:{t:a}:b", b"raw\x00bytes", -1, "caf\u00e9 \u2603", 10**15),
        ("SET", "k", ""),
        ("SCRIPT LOAD", "return 1"),  # a two-word command name: redis-py splits it
        ("GET", "k" * 70_000),  # over redis-py's chunking cutoff
    ],
)
async def test_hiredis_packs_the_bytes_redis_py_would(command: tuple[object, ...]) -> None:
    r = await open_store("redis://127.0.0.1:1/0")  # never connected: packing only
    try:
        connection = r.connection_pool.make_connection()
        reference = Connection(host="127.0.0.1", port=1)
        assert b"".join(connection.pack_command(*command)) == b"".join(
            reference.pack_command(*command)
        )
    finally:
        await close_store(r)


async def test_real_redis_round_trip_of_odd_arguments(real_redis_url: str) -> None:
    url = urlsplit(real_redis_url)._replace(path="/15").geturl()
    r = await open_store(url)
    try:
        script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
        for value in ("caf\u00e9", b"\x00\xff", 12345678901234):
            expected = value if isinstance(value, bytes) else str(value).encode()
            assert await r.eval(script, 1, "sg:test:odd", value) == expected
        await r.delete("sg:test:odd")
    finally:
        await close_store(r)


def test_sentinel_url_parsing() -> None:
    spec = _SentinelUrl.parse(
        "redis+sentinel://user:pw@s1:26380,s2,[::1]:5000/mymaster/4?sentinel_password=sp"
    )
    assert spec.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5000))
    assert (spec.service_name, spec.db) == ("mymaster", 4)
    assert (spec.username, spec.password, spec.sentinel_password) == ("user", "pw", "sp")
    assert _SentinelUrl.parse("redis+sentinel://s1/m?db=2").db == 2
    assert _SentinelUrl.parse("redis+sentinel://s1/m").password is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1",
        "redis+sentinel:///m",
        "redis+sentinel://s1/m/x",
        "redis+sentinel://s1:x/m",
    ],
)
def test_bad_sentinel_urls(url: str) -> None:
    with pytest.raises(ValueError):
        _SentinelUrl.parse(url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sentinel_url(real_redis_url: str, tmp_path: Path) -> Iterator[str]:
    """A real Sentinel watching the test Redis, as master `testmaster`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: cannot start a sentinel")
    master = urlsplit(real_redis_url)
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor testmaster {master.hostname} {master.port} 1\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield f"redis+sentinel://127.0.0.1:{port}/testmaster/15"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_sentinel_store_reaches_the_master(sentinel_url: str) -> None:
    r = await open_store(sentinel_url)
    try:
        assert isinstance(r.connection_pool, SentinelConnectionPool)
        for _ in range(100):  # the sentinel needs a moment to start listening
            try:
                assert await r.ping() is True
                break
            except RedisConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("sentinel never pointed at the master")
        await r.set("sg:test:sentinel", "1")
        assert await r.get("sg:test:sentinel") == b"1"
        await r.delete("sg:test:sentinel")
    finally:
        await close_store(r)
