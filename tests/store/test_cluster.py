"""The store on a Redis Cluster: the URL, and the request path's commands routed by slot over
one pipelined connection per primary (`cluster.Router`), through MOVED (a failover) and ASK (a
slot being migrated), against the test run's real cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.store.cluster import Router, command_key, slot_of
from gateway.store.connect import ClusterUrl, batcher_for, close_store, open_store, redact_url
from tests.conftest import FIXTURES, cluster_store


def test_cluster_url_parsing() -> None:
    spec = ClusterUrl.parse(
        "redis+cluster://user:pw@n1:7000,n2,[::1]:7001/?socket_timeout=3&client_name=gw"
    )
    assert spec.nodes == (("n1", 7000), ("n2", 6379), ("::1", 7001))
    assert (spec.username, spec.password, spec.tls) == ("user", "pw", False)
    assert spec.options == {"socket_timeout": 3.0, "client_name": "gw"}
    tls = ClusterUrl.parse("rediss+cluster://:pw@n1:7000/0?ssl_check_hostname=false")
    assert tls.tls and tls.username is None and tls.password == "pw"
    assert tls.options == {"ssl_check_hostname": False}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://", "expected redis\\+cluster://host:port"),
        ("redis+cluster://n1:x", "port must be a number"),
        ("redis+cluster://n1/2", "database 0 only"),
        ("redis+cluster://n1?db=1", "unknown option 'db'"),
        ("redis+cluster://n1?socket_timeout=soon", "socket_timeout must be a float"),
    ],
)
def test_bad_cluster_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ClusterUrl.parse(url)


def test_cluster_url_errors_never_show_the_password() -> None:
    url = "redis+cluster://:s3cret@n1:7000/5"
    with pytest.raises(ValueError) as info:
        ClusterUrl.parse(url)
    assert "s3cret" not in str(info.value)
    assert redact_url(url) == "redis+cluster://:***@n1:7000/5"


async def test_opening_does_no_io_and_closing_is_clean() -> None:
    r = await open_store("redis+cluster://127.0.0.1:1,127.0.0.1:2")  # nothing listens there
    assert isinstance(r, RedisCluster)
    await close_store(r)


def test_command_keys() -> None:
    assert command_key(("EVALSHA", "ab", 2, "k1", "k2", "arg")) == "k1"
    assert command_key(("EVAL", "return 1", 0)) is None
    assert command_key(("GET", "k")) == "k"
    assert command_key((b"SET", b"k", b"v")) == b"k"
    read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "STREAMS", "{t}:s", ">")
    assert command_key(read) == "{t}:s"
    # A consumer named like the keyword is not taken for it.
    assert command_key(("XREADGROUP", "GROUP", "g", "streams", "STREAMS", "k", ">")) == "k"


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    async with cluster_store(request) as client:
        yield client


def _router(r: Redis) -> Router:
    link = batcher_for(r)._wire
    assert isinstance(link, Router)
    return link


async def test_commands_go_to_their_slots_primary_pipelined(cluster: Redis) -> None:
    batch = batcher_for(cluster)
    keys = [f"sg:{{t:team-{n}}}:x" for n in range(60)]
    assert await asyncio.gather(*(batch.execute("SET", k, k) for k in keys)) == [b"OK"] * 60
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = await cluster.script_load(script)
    counters = [f"sg:{{t:team-{n}}}:n" for n in range(60)]
    replies = await asyncio.gather(*(batch.execute("EVALSHA", sha, 1, k, 5) for k in counters))
    assert replies == [5] * 60
    # The cluster client (redis-py, routed on its own) reads what the router wrote.
    assert [await cluster.get(k) for k in keys[:5]] == [k.encode() for k in keys[:5]]
    assert len(_router(cluster).nodes) == 3, "one connection per primary"


async def test_moved_after_a_failover_is_followed(cluster: Redis, real_cluster_url: str) -> None:
    batch = batcher_for(cluster)
    key = "sg:{t:moved}:n"
    assert await batch.execute("INCR", key) == 1
    manager = cluster.nodes_manager  # type: ignore[attr-defined]
    primary = Redis(port=manager.get_node_from_slot(slot_of(key)).port)
    try:
        replica_port = int((await primary.info("replication"))["slave0"]["port"])
    finally:
        await primary.aclose()
    promoter = Redis(port=replica_port)
    try:
        # A manual failover gives up (and is asked again) if the primary does not hand over
        # in time: on a loaded machine, right after the cluster formed.
        for attempt in range(1, 5):
            await promoter.execute_command("CLUSTER", "FAILOVER")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(8):
                    while (await promoter.info("replication"))["role"] != "master":
                        await asyncio.sleep(0.02)
                    break
            assert attempt < 4, "the replica was never promoted"
    finally:
        await promoter.aclose()
    # The old primary now answers MOVED: each command is sent again to the new one, once.
    replies = await asyncio.gather(*(batch.execute("INCR", key) for _ in range(20)))
    assert sorted(replies) == list(range(2, 22))
    assert await cluster.get(key) == b"21"
    # The nodes learn of the promotion by gossip: until they all have, a reading of the slot
    # table may still name the old primary. Read it until it does not, so that the fixture's
    # cleanup (FLUSHDB on every primary) reaches the new one.
    async with asyncio.timeout(20):
        while manager.get_node_from_slot(slot_of(key)).port != replica_port:
            await asyncio.sleep(0.1)
            await manager.initialize()


async def test_ask_during_a_slot_migration_is_followed(cluster: Redis) -> None:
    batch = batcher_for(cluster)
    key = "sg:{t:asked}:n"
    slot = slot_of(key)
    await batch.execute("GET", key)  # the slot table is read
    manager = cluster.nodes_manager  # type: ignore[attr-defined]
    source = manager.get_node_from_slot(slot)
    target = next(n for n in manager.get_nodes_by_server_type("primary") if n is not source)
    src, dst = Redis(port=source.port), Redis(port=target.port)
    try:
        src_id = await src.execute_command("CLUSTER", "MYID")
        dst_id = await dst.execute_command("CLUSTER", "MYID")
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        # The key is not on the source: it answers ASK, and the command goes to the target.
        assert await batch.execute("SET", key, "7") == b"OK"
        async with dst.pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.get(key)
            assert (await pipe.execute())[1] == b"7"
        async with dst.pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.delete(key)
            await pipe.execute()
    finally:
        for node in (src, dst):
            await node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            await node.aclose()
    assert await batch.execute("GET", key) is None


def test_check_config_refuses_a_bad_cluster_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.config.loader import check_config_main

    config = tmp_path / "gateway.yaml"
    config.write_text(
        (FIXTURES / "gateway.yaml")
        .read_text()
        .replace("url: memory://", 'url: "redis+cluster://:s3cret@n1:x,n2"')
    )
    assert 'redis+cluster://:s3cret@n1:x,n2"' in config.read_text()
    assert check_config_main(str(config), True) == 1
    err = capsys.readouterr()
    out = err.out + err.err
    assert "store.url: bad cluster url" in out and "port must be a number" in out
    assert str(config) in out
    assert "s3cret" not in out
