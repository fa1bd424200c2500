"""Per-model caps: output ceilings and prompt size limits refused with a clear 400."""

from __future__ import annotations

import pytest

from gateway.config.model import Deployment, ModelRoute
from gateway.errors import InvalidRequest
from gateway.pricing.price import Price
from gateway.routing.caps import check_caps, default_output_cap

PRICE = Price(input_per_m=1, output_per_m=1, cached_input_per_m=1, reasoning_per_m=1)
ROUTE = ModelRoute(
    name="gpt-4o",
    deployments=(Deployment("mock/gpt-4o", "mock", "gpt-4o", 1, PRICE),),
    max_tokens_cap=1000,
    max_prompt_tokens=5000,
)
OPEN = ModelRoute(name="free", deployments=ROUTE.deployments)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_output_over_the_cap_is_refused(field: str) -> None:
    check_caps(ROUTE, "chat/completions", {field: 1000}, 10)
    with pytest.raises(InvalidRequest) as caught:
        check_caps(ROUTE, "chat/completions", {field: 1001}, 10)
    error = caught.value
    assert error.status == 400 and error.param == field and error.code == "max_tokens_exceeded"
    assert f"{field} is 1001, but model 'gpt-4o' allows at most 1000" in error.message


@pytest.mark.parametrize(
    ("endpoint", "param"),
    [("chat/completions", "messages"), ("completions", "prompt"), ("embeddings", "input")],
)
def test_prompt_over_the_limit_is_refused(endpoint: str, param: str) -> None:
    check_caps(ROUTE, endpoint, {}, 5000)
    check_caps(ROUTE, endpoint, {}, None)  # not counted: not checked
    with pytest.raises(InvalidRequest) as caught:
        check_caps(ROUTE, endpoint, {}, 5001)
    assert caught.value.param == param and caught.value.code == "prompt_too_large"
    assert "the prompt is 5001 tokens" in caught.value.message


def test_routes_without_caps_accept_anything() -> None:
    check_caps(OPEN, "chat/completions", {"max_tokens": 10**6}, 10**7)


def test_default_output_cap() -> None:
    assert default_output_cap(ROUTE, 4096) == 1000
    assert default_output_cap(ROUTE, 500) == 500
    assert default_output_cap(OPEN, 4096) == 4096
