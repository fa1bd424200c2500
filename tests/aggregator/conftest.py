from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store
from tests.conftest import cluster_store, local_store
from tests.ledger import AGGREGATOR_DB, open_db


@pytest.fixture(params=["redis", "local", "cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A real server, empty at the start of each test: database 2 of the test run's Redis, the
    local store's own server, or the test run's Redis Cluster (the aggregator's contract holds
    on every layout)."""
    if request.param == "cluster":
        async with cluster_store(request) as client:
            yield client
        return
    if request.param == "local":
        async with local_store(request) as client:
            yield client
        return
    client = await open_db(request.getfixturevalue("real_redis_url"), AGGREGATOR_DB)
    yield client
    await client.flushdb()
    await close_store(client)
