"""The rollup format both sides share: bucket names, field encoding, combined values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.rollupformat import (
    DIMENSIONS,
    HOURLY_DIMENSIONS,
    hour_bucket,
    join_parts,
    parse_prices,
    price_text,
    split_field,
    split_parts,
)


def _ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("ms", "bucket"),
    [
        (_ms(2024, 2, 29, 23, 59, 59) + 999, "2024022923"),  # last ms of a leap day
        (_ms(2024, 3, 1, 0, 0, 0), "2024030100"),
        (_ms(2025, 12, 31, 23, 59, 59) + 999, "2025123123"),  # last ms of a year
        (_ms(2026, 1, 1, 0, 0, 0), "2026010100"),
    ],
)
def test_hour_bucket_is_utc_and_its_day_is_the_prefix(ms: int, bucket: str) -> None:
    assert hour_bucket(ms) == bucket
    assert hour_bucket(ms)[:8] == datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d")


def test_combined_values_round_trip_any_name() -> None:
    for parts in (("a", "b"), ("x|y", "100%"), ("%7C", "|"), ("", "-"), ("%25|%7C",)):
        assert split_parts(join_parts(*parts)) == parts


def test_a_field_splits_at_its_last_bar() -> None:
    assert split_field("a|b|cost") == ("a|b", "cost")
    assert split_field(join_parts("x|y", "z") + "|savings:cache") == ("x%7Cy|z", "savings:cache")


def test_the_line_dimension_is_daily_only() -> None:
    assert set(DIMENSIONS) - set(HOURLY_DIMENSIONS) == {"line"}


def test_line_prices_are_exact_short_usd_per_million_tokens() -> None:
    nano = (2_500_000_000, 1_250_000_000, 10_000_000_000, 0)
    assert price_text(nano) == "2.5,1.25,10,0"
    assert parse_prices(price_text(nano)) == nano
    assert price_text((1, 20, 300_000_000_000, 7)) == "0.000000001,0.00000002,300,0.000000007"
    assert parse_prices("0.000000001,0,1e3,12.5") == (1, 0, 1_000_000_000_000, 12_500_000_000)
    assert parse_prices("=", nano) == nano  # contracted at the list price
    assert parse_prices("-") is None  # unknown
    assert parse_prices("1,2,3") is None
