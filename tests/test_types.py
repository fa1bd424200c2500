"""SpendEvent's stream form: the flat list the settle script appends, and back."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from gateway.types import SpendEvent, exact_decimal


def _by_the_rule(event: SpendEvent) -> list[str]:
    """The stream form as its rule states it, field by field in declaration order: what
    `to_flat`, written out by hand for speed, must equal."""
    flat: list[str] = []
    for f in dataclasses.fields(SpendEvent):
        value: Any = getattr(event, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif f.name == "tags":
            text = orjson.dumps(dict(value)).decode()
        else:
            text = value if isinstance(value, str) else str(value)
        flat += (f.name, text)
    return flat


def _every_field_set() -> SpendEvent:
    values: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(SpendEvent)):
        kind = str(f.type)
        if f.name == "tags":
            values[f.name] = {"team": "a", "cost_center": "cc-1"}
        elif kind == "bool":
            values[f.name] = True
        elif kind.startswith("int"):
            values[f.name] = 1000 + i
        elif kind == "float":
            values[f.name] = 0.5 + i
        else:
            values[f.name] = f"v{i}"
    return SpendEvent(**values)


@pytest.mark.parametrize(
    "event",
    [
        _every_field_set(),
        SpendEvent(event_id="e", ts_ms=1, team="alpha"),  # every optional field None
        dataclasses.replace(_every_field_set(), tokens_estimated=False, tags={}),
    ],
    ids=["every-field", "defaults", "false-flag-no-tags"],
)
def test_the_flat_form_follows_its_rule_for_every_field(event: SpendEvent) -> None:
    assert event.to_flat() == _by_the_rule(event)


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
