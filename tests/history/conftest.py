from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.connect import close_store
from tests.ledger import open_db

SOURCE_DB = 5  # the real-Redis databases of tests/history: the ledger exported from,
TARGET_DB = 6  # and the empty one imported into


@pytest.fixture
async def source(real_redis_url: str) -> AsyncIterator[Redis]:
    client = await open_db(real_redis_url, SOURCE_DB)
    yield client
    await client.flushdb()
    await close_store(client)


@pytest.fixture
async def target(real_redis_url: str) -> AsyncIterator[Redis]:
    client = await open_db(real_redis_url, TARGET_DB)
    yield client
    await client.flushdb()
    await close_store(client)
