"""CommandBatcher against a real Redis: one round trip per loop turn, replies in order, an error
reply to its own caller only, a dead connection to every caller, a caller that left skipped."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.store.batch import CommandBatcher
from gateway.store.connect import close_store, open_store


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    client = await open_store(urlsplit(real_redis_url)._replace(path="/14").geturl())
    await client.flushdb()
    yield client
    await client.flushdb()
    await close_store(client)


async def test_one_turn_is_one_round_trip_with_replies_in_order(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = 0
    make = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return make(*args, **kwargs)

    monkeypatch.setattr(redis, "pipeline", counting)
    batch = CommandBatcher(redis)
    sets = [batch.execute("SET", f"k{i}", f"v{i}") for i in range(50)]
    gets = [batch.execute("GET", f"k{i}") for i in range(50)]
    assert await asyncio.gather(*sets) == [True] * 50
    assert await asyncio.gather(*gets) == [f"v{i}".encode() for i in range(50)]
    assert pipelines == 1
    # A later turn is a batch of its own, and a lone command needs no pipeline.
    assert await batch.execute("GET", "k7") == b"v7"
    assert pipelines == 1


async def test_an_error_reply_reaches_only_its_caller(redis: Redis) -> None:
    await redis.set("text", "x")
    batch = CommandBatcher(redis)
    before = batch.execute("INCR", "n")
    wrong = batch.execute("LPUSH", "text", "y")  # WRONGTYPE
    after = batch.execute("INCR", "n")
    assert await before == 1 and await after == 2
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await wrong
    alone = batch.execute("LPUSH", "text", "y")  # the one-command path too
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await alone


async def test_a_dead_server_fails_every_caller() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    client = await open_store(f"redis://127.0.0.1:{port}/0")
    try:
        batch = CommandBatcher(client)
        calls = [batch.execute("GET", f"k{i}") for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await close_store(client)


async def test_a_caller_that_left_does_not_disturb_the_others(redis: Redis) -> None:
    batch = CommandBatcher(redis)
    gone = batch.execute("SET", "a", "1")
    kept = batch.execute("GET", "a")
    gone.cancel()
    assert await kept == b"1"  # the SET still ran: only its reply was dropped
    queued = batch.execute("SET", "b", "2")
    await batch.aclose()  # sends what is queued
    assert queued.result() is True and await redis.get("b") == b"2"
