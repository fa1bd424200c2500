"""Budget periods (UTC calendar, ISO weeks) and which budgets apply to a caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from gateway.budgets.periods import (
    applicable,
    budget_applies,
    end_of_period_id,
    period_end,
    period_id,
    period_start,
)
from gateway.types import Principal
from tests.budgets.support import budget

NOV26 = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday, ISO week 48


@pytest.mark.parametrize(
    ("period", "expected_id", "start", "end"),
    [
        (
            "daily",
            "d20261126",
            datetime(2026, 11, 26, tzinfo=UTC),
            datetime(2026, 11, 27, tzinfo=UTC),
        ),
        (
            "weekly",
            "w2026W48",
            datetime(2026, 11, 23, tzinfo=UTC),
            datetime(2026, 11, 30, tzinfo=UTC),
        ),
        (
            "monthly",
            "m202611",
            datetime(2026, 11, 1, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
        ),
        ("total", "total", None, None),
    ],
)
def test_periods(
    period: str, expected_id: str, start: datetime | None, end: datetime | None
) -> None:
    assert period_id(period, NOV26) == expected_id  # type: ignore[arg-type]
    assert period_start(period, NOV26) == start  # type: ignore[arg-type]
    assert period_end(period, NOV26) == end  # type: ignore[arg-type]
    assert end_of_period_id(expected_id) == end


def test_calendar_edges() -> None:
    new_year = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert period_end("monthly", new_year) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_end("daily", new_year) == datetime(2027, 1, 1, tzinfo=UTC)
    # ISO weeks belong to the ISO year: 2027-01-01 is a Friday of 2026's week 53.
    assert period_id("weekly", datetime(2027, 1, 1, tzinfo=UTC)) == "w2026W53"
    assert end_of_period_id("w2026W53") == datetime(2027, 1, 4, tzinfo=UTC)
    assert period_id("daily", datetime(2028, 2, 29, tzinfo=UTC)) == "d20280229"
    assert end_of_period_id("m202802") == datetime(2028, 3, 1, tzinfo=UTC)


def test_other_timezones_and_naive_times_are_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 08:00 on Dec 1 in Tokyo is still Nov 30 in UTC.
    assert period_id("monthly", datetime(2026, 12, 1, 8, 0, tzinfo=tokyo)) == "m202611"
    assert period_id("daily", datetime(2026, 11, 26, 23, 0)) == "d20261126"


@pytest.mark.parametrize("bad", ["", "x2026", "d2026", "m2026AB", "w2026W99"])
def test_bad_period_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        end_of_period_id(bad)


def test_which_budgets_apply() -> None:
    caller = Principal(
        key_id="key_0123456789ab",
        team="alpha",
        project="search",
        tags=MappingProxyType({"exp": "a1", "env": "dev"}),
    )
    rules = (
        team := budget("team"),
        key := budget("key", scope="key", match="key_0123456789ab"),
        other_key := budget("other-key", scope="key", match="key_ffffffffffff"),
        project := budget("project", scope="project", match="search"),
        budget("other-project", scope="project", match="ads"),
        tag := budget("tag", scope="tag", match="exp=a1"),
        budget("tag-other-value", scope="tag", match="exp=a2"),
        budget("tag-malformed", scope="tag", match="exp"),
        budget("beta-team", team="beta"),
    )
    assert applicable(rules, caller) == (team, key, project, tag)
    assert not budget_applies(other_key, caller)
    bare = Principal(key_id="key_ffffffffffff", team="alpha")
    assert applicable(rules, bare) == (team, other_key)
    assert applicable(rules, Principal(key_id="key_0123456789ab", team="gamma")) == ()


def test_period_at_and_hour_id_match_the_datetime_versions() -> None:
    from gateway.budgets.periods import hour_id, period_at

    for when in (
        NOV26,
        datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2028, 2, 29, 0, 0, 0, 1000, tzinfo=UTC),
    ):
        ms = int(when.timestamp() * 1000)
        for period in ("daily", "weekly", "monthly", "total"):
            assert period_at(period, ms) == (period_id(period, when), period_end(period, when))  # type: ignore[arg-type]
        assert hour_id(ms) == when.strftime("%Y%m%d%H")
