from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import LAYOUTS, store_on
from tests.ledger import AGGREGATOR_DB


@pytest.fixture(params=[layout for layout in LAYOUTS if layout != "memory"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A real server, empty at the start of each test: database 2 of the test run's Redis, the
    local store's own server, or the test run's Redis Cluster (the aggregator's contract holds
    on every layout)."""
    async with store_on(request, request.param, AGGREGATOR_DB) as client:
        yield client
