"""`seed`: a gateway with the dashboard tests' seeded spend (tests/dashboard/support.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.providers.mock import MockUpstream
from tests.conftest import Gateway, GatewayFactory
from tests.dashboard.support import seeded_gateway

Seed = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def seed(
    gateway_factory: GatewayFactory,
    mock_upstream: MockUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Seed:
    """`await seed()` (or `seed(clock)`): the seeded gateway, on the default running clock or
    on `clock`."""

    def make(clock: Callable[[], float] | None = None) -> Awaitable[Gateway]:
        return seeded_gateway(gateway_factory, mock_upstream, monkeypatch, tmp_path, clock)

    return make
