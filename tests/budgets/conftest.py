"""Fixtures for budget tests: stores (in-process fakeredis, db 1 of the test run's real Redis,
flushed around each test, and the local store's own server) and an injectable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.budgets.support import REAL_DB, FakeClock
from tests.conftest import LAYOUTS, store_on


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def real_store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    async with store_on(request, "redis", REAL_DB) as r:
        yield r


@pytest.fixture(params=LAYOUTS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """The budget contract runs on every layout: in-process, a Redis, the local store, a Redis
    Cluster."""
    async with store_on(request, request.param, REAL_DB) as r:
        yield r
