"""Approval tests run on every store layout the budget contract runs on (in-process, a real
Redis, the local store: `tests.budgets.conftest.store`), with a clock that stands still until
moved."""

from __future__ import annotations

import pytest

from tests.budgets.conftest import real_store, store
from tests.clock import FakeClock

__all__ = ["real_store", "store"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
