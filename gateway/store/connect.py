"""Opening and closing the one Redis client a process uses, from `store.url`.

`local://` (the default) is a server spendgate runs itself, its data in `store.data_dir` (see
`server`), reached on its unix socket; `redis://`, `rediss://`, `unix://` and
`redis+sentinel://` reach a server of the user's, `redis+cluster://` (`rediss+cluster://`) a
Redis Cluster; `memory://` is an in-process fakeredis with Lua that keeps nothing (tests,
throwaway runs). Clients return bytes (redis-py's default) so binary
cache values round-trip; callers decode. URLs are logged only through `redact_url`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway import rediskeys
from gateway.config.storeurl import CLUSTER_SCHEMES, host_port
from gateway.config.storeurl import ClusterUrl as ClusterUrl  # re-exported
from gateway.config.storeurl import redact_url as redact_url  # re-exported: logs use it
from gateway.store.batch import CommandBatcher
from gateway.store.cluster import Router, is_cluster
from gateway.store.server import local_store
from gateway.store.wire import Address

if TYPE_CHECKING:
    from gateway.config.model import StoreConfig

EMBEDDED_SCHEME = "memory"
LOCAL_SCHEME = "local"
_DIRECT_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SENTINEL_SCHEME = "redis+sentinel"
_SENTINEL_DEFAULT_PORT = 26379

# Defaults for a real server; query-string options in the URL win (redis-py's rule), so ops can
# tune them without a code change, e.g. redis://host/0?socket_timeout=30&max_connections=256.
# No per-command socket timeout and no health-check PINGs: each costs redis-py a timer or a
# clock read on every command (measured: 85 -> 44 us per EVALSHA). Dead peers are found by TCP
# keepalive; the request path bounds its own Redis calls (see accounting.STORE_TIMEOUT_S), and an
# aggregator's XREADGROUP BLOCK needs no timeout above it.
_CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": None,
    "socket_keepalive": True,
    "health_check_interval": 0,
    "client_name": "spendgate",
}
# A blocking pool makes a burst wait briefly for a connection instead of failing with
# "Too many connections"; the cap keeps one replica from exhausting Redis's maxclients.
_MAX_CONNECTIONS = 128
_POOL_WAIT_S = 5.0
_EMBEDDED_MAX_CONNECTIONS = 1_000_000
# redis-py's cluster pools do not wait for a free connection: past the cap a command fails
# (MaxConnectionsError). Per node, and only off the request path (it has its own connection).
_CLUSTER_MAX_CONNECTIONS = 1024
_BATCHERS: weakref.WeakKeyDictionary[aioredis.Redis, CommandBatcher] = weakref.WeakKeyDictionary()


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (C) rather than redis-py's Python packer, which cost a settle
    (an EVALSHA of about fifteen arguments) some 25 us: under load, a third of the settle path.
    The same bytes on the wire; anything hiredis does not take goes the Python way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " not in args[0]:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # bool, None...: redis-py raises its own, clearer DataError
                pass
        return super().pack_command(*args)


class _FastConnection(_HiredisPacking, Connection):
    pass


class _FastSSLConnection(_HiredisPacking, SSLConnection):
    pass


class _FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_CONNECTION_CLASSES: dict[str, type[AbstractConnection]] = {
    "redis": _FastConnection,
    "rediss": _FastSSLConnection,
    "unix": _FastUnixConnection,
}


def _retry() -> Retry:
    # Only connection errors are retried: a timed-out command may already have run on the
    # server, and running a reserve/settle script twice would double-count money.
    return Retry(
        ExponentialWithJitterBackoff(base=0.02, cap=0.5),
        retries=3,
        supported_errors=(RedisConnectionError,),
    )


@asynccontextmanager
async def connected(store: StoreConfig) -> AsyncIterator[aioredis.Redis]:
    """A client of the store for the length of a block (a command-line tool's). The local
    store is the running gateway's, or, when none runs, started for the block."""
    if is_local(store.url):
        async with local_store(store.data_dir) as url:
            redis = await open_store(url)
            try:
                yield redis
            finally:
                await close_store(redis)
        return
    redis = await open_store(store.url)
    try:
        yield redis
    finally:
        await close_store(redis)


def is_embedded(url: str) -> bool:
    """True for the in-process store (`memory://`), which lives and dies with this process."""
    return urlsplit(url).scheme.lower() == EMBEDDED_SCHEME


def is_local(url: str) -> bool:
    """True for the server spendgate runs itself (`local://`, see `gateway.store.server`)."""
    return urlsplit(url).scheme.lower() == LOCAL_SCHEME


def serves_inside(url: str) -> bool:
    """True when the store is spendgate's own (`memory://`, `local://`): the aggregator runs
    inside `serve` rather than as `spendgate aggregate`."""
    return is_embedded(url) or is_local(url)


# Virtual keys and budgets are changed rarely and must never be lost; spend (many writes a
# second) may lose the last second in a machine failure. Hence a wait for the fsync after the
# former only.
_FSYNC_WAIT_MS = 2000


async def fsynced(r: aioredis.Redis) -> bool:
    """Wait until the server has fsync'd every write it has acknowledged so far to its
    append-only file (WAITAOF after a write of our own: the file is one sequence, so covering
    ours covers the earlier ones). False, and nothing waited for, where the server keeps no
    such file (memory://, a Redis without AOF or older than 7.2) or the wait timed out, and
    on a cluster, whose writes live on several primaries: there the cluster's own persistence
    and replicas decide (docs/operations.md)."""
    if is_cluster(r):
        return False
    try:
        async with r.pipeline(transaction=False) as pipe:
            pipe.incr(rediskeys.fsync_marker())
            pipe.execute_command("WAITAOF", 1, 0, _FSYNC_WAIT_MS)
            _, (local, _replicas) = await pipe.execute()
    except ResponseError:  # no AOF, or no WAITAOF
        return False
    return int(local) >= 1


async def open_store(url: str) -> aioredis.Redis:
    """A client for `url`. Real servers are not contacted yet: connections open on first use."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == EMBEDDED_SCHEME:
        return await _open_embedded()
    if scheme == LOCAL_SCHEME:
        raise ValueError("local:// is opened through its server: see gateway.store.server")
    if scheme in _DIRECT_SCHEMES:
        defaults = dict(_CLIENT_DEFAULTS)
        if scheme == "unix":
            del defaults["socket_keepalive"]  # a TCP option, refused by unix connections
        # Options from the URL win over the defaults; the connection class is ours whatever
        # the URL says (redis-py's parser names its own for unix:// and rediss://, which would
        # leave those on its slow path and without the request path's pipelined wire).
        options: dict[str, Any] = {
            "max_connections": _MAX_CONNECTIONS,
            "timeout": _POOL_WAIT_S,
            "retry": _retry(),
            **defaults,
            **parse_url(url),
            "connection_class": _CONNECTION_CLASSES[scheme],
        }
        pool = BlockingConnectionPool(**options)
        return aioredis.Redis.from_pool(pool)
    if scheme == _SENTINEL_SCHEME:
        return _open_sentinel(_SentinelUrl.parse(url))
    if scheme in CLUSTER_SCHEMES:
        return _open_cluster(ClusterUrl.parse(url))
    raise ValueError(
        f"unsupported store url {redact_url(url)!r}: use local://, memory://, redis://, "
        "rediss://, unix://, redis+sentinel:// or redis+cluster://"
    )


def batcher_for(r: aioredis.Redis) -> CommandBatcher:
    """The command batcher of client `r`, one per client, so that the request path's commands
    of one loop turn (budget reserves and settles, cache reads and writes) go together. For a
    server reached directly it has a pipelined connection of its own (see `wire`)."""
    batcher = _BATCHERS.get(r)
    if batcher is None:
        if is_cluster(r):  # one pipelined connection per primary, commands routed by slot
            batcher = _BATCHERS[r] = CommandBatcher(r, link=Router.of(r))
            return batcher
        direct = issubclass(r.connection_pool.connection_class, _HiredisPacking)
        batcher = _BATCHERS[r] = CommandBatcher(r, Address.of(r) if direct else None)
    return batcher


async def close_store(r: aioredis.Redis) -> None:
    """Close the client, its batcher's connection, its pool and, for Sentinel, the clients
    that talk to the sentinels."""
    batcher = _BATCHERS.pop(r, None)
    if batcher is not None:
        await batcher.aclose()
    if is_cluster(r):
        await r.aclose()
        return
    pool = r.connection_pool
    await r.aclose()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel_client in pool.sentinel_manager.sentinels:
            await sentinel_client.aclose()


async def _open_embedded() -> aioredis.Redis:
    import fakeredis  # imported here: only the embedded store needs it

    # Each call gets its own FakeServer, so two embedded stores (tests, two apps) never share data.
    # Fake connections cost nothing, but redis-py's pool refuses a 101st concurrent one by
    # default ("Too many connections"), which a burst of requests on the embedded store hits.
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(
        server=fakeredis.FakeServer(), max_connections=_EMBEDDED_MAX_CONNECTIONS
    )
    try:
        await client.eval("return 1", 0)
    except ResponseError as exc:
        await client.aclose()
        # Budgets are Lua scripts; without lupa the embedded store cannot enforce them.
        raise RuntimeError(
            "the embedded store (memory://) needs Lua scripting: install fakeredis[lua] (lupa)"
        ) from exc
    return client


@dataclass(frozen=True, slots=True)
class _SentinelUrl:
    """`redis+sentinel://[user:password@]host:port,host:port/service_name[/db][?options]`.

    The userinfo authenticates to the master; `sentinel_password` (query) to the sentinels.
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None

    @classmethod
    def parse(cls, url: str) -> _SentinelUrl:
        # urlsplit cannot parse a comma-separated host list's ports, so split by hand.
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        sentinels = tuple(host_port(h, _SENTINEL_DEFAULT_PORT) for h in hosts.split(",") if h)
        path = [unquote(p) for p in parts.path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if not sentinels or not path or len(path) > 2:
            raise ValueError(
                f"bad sentinel url {redact_url(url)!r}: expected "
                "redis+sentinel://host:port[,host:port...]/service_name[/db]"
            )
        db_text = path[1] if len(path) == 2 else query.get("db", "0")
        if not db_text.isdigit():
            raise ValueError(f"bad sentinel url {redact_url(url)!r}: db must be a number")
        return cls(
            sentinels=sentinels,
            service_name=path[0],
            db=int(db_text),
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_password=query.get("sentinel_password"),
        )


def _open_sentinel(spec: _SentinelUrl) -> aioredis.Redis:
    timeouts = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.startswith("socket_")}
    # redis-py before 8.2 leaves Sentinel() untyped; 8.2 types it.
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(spec.sentinels),
        sentinel_kwargs={**timeouts, "password": spec.sentinel_password},
        **_CLIENT_DEFAULTS,
    )
    client: aioredis.Redis = sentinel.master_for(
        spec.service_name,
        db=spec.db,
        username=spec.username,
        password=spec.password,
        retry=_retry(),
    )
    return client


def _open_cluster(spec: ClusterUrl) -> aioredis.Redis:
    # The client serves everything off the request path (redis-py routes each command by slot
    # and follows MOVED/ASK itself) and holds the slot table the request path's Router uses.
    options: dict[str, Any] = {**_CLIENT_DEFAULTS, "max_connections": _CLUSTER_MAX_CONNECTIONS}
    options.update(spec.options)
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in spec.nodes],
        username=spec.username,
        password=spec.password,
        ssl=spec.tls,
        retry=_retry(),
        **options,
    )
    # Typed as the plain client its callers take: the cluster client has the same commands
    # (one key's, or keys of one slot; multi-slot ones go through `cluster` helpers).
    return cast("aioredis.Redis", cluster)
