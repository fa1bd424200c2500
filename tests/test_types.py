"""SpendEvent's stream form: the flat list the settle script appends, and back."""

from __future__ import annotations

from gateway.types import SpendEvent


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
