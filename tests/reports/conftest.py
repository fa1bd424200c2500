from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store
from tests.conftest import cluster_store
from tests.ledger import REPORTS_DB, db_url, open_db


@pytest.fixture(params=["redis", "cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A real Redis, database 3, or the test run's Redis Cluster, empty at the start of each
    test."""
    if request.param == "cluster":
        async with cluster_store(request) as cluster:
            yield cluster
        return
    client = await open_db(request.getfixturevalue("real_redis_url"), REPORTS_DB)
    yield client
    await client.flushdb()
    await close_store(client)


@pytest.fixture
def redis_url(redis: Redis, request: pytest.FixtureRequest) -> str:
    """The store URL of `redis`, for a config file (the CLI opens the store itself)."""
    if request.node.callspec.params.get("redis") == "cluster":
        return str(request.getfixturevalue("real_cluster_url"))
    return db_url(request.getfixturevalue("real_redis_url"), REPORTS_DB)
