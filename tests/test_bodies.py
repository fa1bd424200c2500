"""Reading what a request body asks for: one reading for tiers, cascades and the signals."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.bodies import response_format


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "json_schema"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "json_schema"),  # Responses
        ({"response_format": {"type": "text"}}, None),
        ({"text": {"format": {"type": "text"}}}, None),
        ({}, None),
        ({"response_format": None, "text": "plain"}, None),  # not objects: nothing asked
        ({"response_format": {"type": 5}}, None),  # not a type name
        # Chat's field wins over the Responses one when both are objects.
        ({"response_format": {"type": "text"}, "text": {"format": {"type": "json_object"}}}, None),
    ],
)
def test_response_format(body: dict[str, Any], expected: str | None) -> None:
    assert response_format(body) == expected
