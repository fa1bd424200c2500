from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store
from tests.conftest import local_store
from tests.ledger import AGGREGATOR_DB, open_db


@pytest.fixture(params=["redis", "local"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A real server, empty at the start of each test: database 2 of the test run's Redis, or
    the local store's own server (the aggregator's contract holds on both layouts)."""
    if request.param == "local":
        async with local_store(request) as client:
            yield client
        return
    client = await open_db(request.getfixturevalue("real_redis_url"), AGGREGATOR_DB)
    yield client
    await client.flushdb()
    await close_store(client)
