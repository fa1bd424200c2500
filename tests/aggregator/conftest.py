from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store
from tests.ledger import AGGREGATOR_DB, open_db


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    """A real Redis, database 2, empty at the start of each test."""
    client = await open_db(real_redis_url, AGGREGATOR_DB)
    yield client
    await client.flushdb()
    await close_store(client)
