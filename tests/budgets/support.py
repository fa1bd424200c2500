"""Helpers for budget tests: an injectable clock, budget builders, the real-Redis test db."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from gateway.config.model import BudgetConfig
from tests import clock

TEAM = "alpha"
REAL_DB = 1  # only this db of the test server is ever flushed by these tests


def real_db_url(base: str) -> str:
    return urlsplit(base)._replace(path=f"/{REAL_DB}").geturl()


class FakeClock(clock.FakeClock):
    """Starts mid-month well after the dates other tests use."""

    def __init__(self, now: datetime | None = None) -> None:
        super().__init__(now or datetime(2031, 3, 14, 12, 0, tzinfo=UTC))


def budget(
    name: str = "monthly",
    *,
    team: str = TEAM,
    scope: str = "team",
    match: str | None = None,
    period: str = "monthly",
    limit_nano: int | None = None,
    limit_tokens: int | None = None,
    on_exceed: str = "block",
    downgrade_to: str | None = None,
    thresholds: tuple[int, ...] = (50, 75, 90, 100),
) -> BudgetConfig:
    return BudgetConfig(
        name=name,
        team=team,
        scope=scope,  # type: ignore[arg-type]
        match=match,
        period=period,  # type: ignore[arg-type]
        limit_nano=limit_nano,
        limit_tokens=limit_tokens,
        on_exceed=on_exceed,  # type: ignore[arg-type]
        downgrade_to=downgrade_to,
        thresholds=thresholds,
    )
