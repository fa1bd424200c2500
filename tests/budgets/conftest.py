"""Fixtures for budget tests: stores (in-process fakeredis, db 1 of the test run's real Redis,
flushed around each test, and the local store's own server) and an injectable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store, open_store
from tests.budgets.support import FakeClock, real_db_url
from tests.conftest import cluster_store, local_store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _real_store(base_url: str) -> AsyncIterator[Redis]:
    r = await open_store(real_db_url(base_url))
    await r.flushdb()
    yield r
    await r.flushdb()
    await close_store(r)


@pytest.fixture
async def real_store(real_redis_url: str) -> AsyncIterator[Redis]:
    async for r in _real_store(real_redis_url):
        yield r


@pytest.fixture(params=["memory", "redis", "local", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """The budget contract runs on every layout: in-process, a Redis, the local store, a Redis
    Cluster."""
    if request.param == "cluster":
        async with cluster_store(request) as r:
            yield r
        return
    if request.param == "local":
        async with local_store(request) as r:
            yield r
        return
    if request.param == "memory":
        r = await open_store("memory://")
        yield r
        await close_store(r)
        return
    async for r in _real_store(request.getfixturevalue("real_redis_url")):
        yield r
