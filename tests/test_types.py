"""SpendEvent's stream form: the flat list the settle script appends, and back."""

from __future__ import annotations

from gateway.types import SpendEvent, exact_decimal


def test_the_flat_form_round_trips_through_the_stream_fields() -> None:
    event = SpendEvent(
        event_id="ev_1",
        ts_ms=1_790_000_000_123,
        team="alpha",
        project="search",
        tags={"cost_center": "cc-1"},
        prompt_tokens=12,
        tokens_estimated=True,
        cost_nano=9_007_199_254_740_000,
        latency_ms=1.25,
        revenue_nano=None,
    )
    flat = event.to_flat()
    names, values = flat[::2], flat[1::2]
    assert all(isinstance(v, str) for v in values)
    assert "revenue_nano" not in names and "environment" not in names  # None is left out
    fields = dict(zip(names, values, strict=True))
    assert fields == event.to_fields()
    assert fields["tokens_estimated"] == "1" and fields["tags"] == '{"cost_center":"cc-1"}'
    assert fields["cost_nano"] == "9007199254740000"  # exact: no float on the way
    assert SpendEvent.from_fields(fields) == event
    # As Redis replies hold them (bytes), and with values that are not text (a hand-made
    # archive line): the same event, every text field text.
    assert SpendEvent.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == event
    loose = SpendEvent.from_fields({**fields, "team": 7, "cost_nano": 9_007_199_254_740_000})
    assert loose.team == "7" and loose.cost_nano == event.cost_nano


def test_an_external_costs_classification_round_trips_and_requests_carry_none() -> None:
    posted = SpendEvent(
        event_id="ext:1",
        ts_ms=1,
        team="alpha",
        kind="external",
        cost_nano=-20_000_000_000,
        charge='{"category":"Credit"}',
    )
    assert SpendEvent.from_fields(posted.to_fields()) == posted
    assert "charge" not in SpendEvent(event_id="e", ts_ms=1, team="alpha").to_fields()


def test_exact_decimal_is_exact_short_and_always_a_decimal() -> None:
    assert exact_decimal(2_500_000_000, 9) == "2.5"
    assert exact_decimal(10_000_000_000, 9) == "10.0"
    assert exact_decimal(7, 6) == "0.000007"
    assert exact_decimal(3, 0) == "3.0"
    assert exact_decimal(0, 15) == "0.0"
    assert exact_decimal(-20_000_000_001, 9) == "-20.000000001"
    assert exact_decimal(123_456_789_012_345_678, 15) == "123.456789012345678"
