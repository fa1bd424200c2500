"""Cache keys: what separates two requests, what does not, and which requests may be cached."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.key import cache_directive, cache_key, cacheable, namespace_for, storable
from gateway.config.model import CacheRoutePolicy
from gateway.types import Principal

BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}
DETERMINISTIC = CacheRoutePolicy()
ALWAYS = CacheRoutePolicy(mode="always")
OFF = CacheRoutePolicy(mode="off")


def key(body: dict[str, Any], endpoint: str = "chat/completions", ns: str = "t:alpha") -> str:
    return cache_key(endpoint, body, ns)


def test_key_is_namespaced_and_stable() -> None:
    k = key(BASE)
    assert k.startswith("t:alpha:") and len(k) == len("t:alpha:") + 64
    assert key(dict(reversed(list(BASE.items())))) == k  # field order does not matter
    assert key(BASE, ns="t:beta") != k
    assert key(BASE, ns="shared").startswith("shared:")


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o-mini"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"seed": 7},
        {"n": 2},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"stop": ["\n"]},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"logit_bias": {"50256": -100}},
        {"logprobs": True},
        {"top_logprobs": 2},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
        {"reasoning_effort": "high"},
        {"modalities": ["text", "audio"]},
        {"some_future_parameter": 1},  # unknown fields keep requests apart
    ],
)
def test_fields_that_change_the_answer_change_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"stream": True},
        {"stream_options": {"include_usage": True}},
        {"user": "someone"},
        {"metadata": {"sg_tier": "premium"}},
        {"temperature": 0.0},  # 0.0 == 0
        {"seed": None},  # null == absent
    ],
)
def test_fields_that_do_not_change_the_answer_keep_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) == key(BASE)


def test_endpoint_and_variant_are_part_of_the_key() -> None:
    body = {"model": "m", "input": "x"}
    assert cache_key("embeddings", body, "t:a") != cache_key("responses", body, "t:a")
    assert cache_key("embeddings", body, "t:a", "gpt-4o") != cache_key("embeddings", body, "t:a")


def test_embedding_parameters_are_part_of_the_key() -> None:
    body = {"model": "e", "input": ["a", "b"]}
    base = cache_key("embeddings", body, "t:a")
    assert cache_key("embeddings", {**body, "dimensions": 4}, "t:a") != base
    assert cache_key("embeddings", {**body, "encoding_format": "base64"}, "t:a") != base


def test_namespace_is_the_team_unless_shared() -> None:
    alpha = Principal(key_id="key_1", team="alpha")
    assert namespace_for(alpha, DETERMINISTIC) == "t:alpha"
    assert namespace_for(alpha, CacheRoutePolicy(shared=True)) == "shared"


@pytest.mark.parametrize(
    ("body", "policy", "expected"),
    [
        (BASE, DETERMINISTIC, True),
        ({**BASE, "temperature": 0.0}, DETERMINISTIC, True),
        ({**BASE, "temperature": 0.7}, DETERMINISTIC, False),
        ({**BASE, "temperature": 0.7, "seed": 1}, DETERMINISTIC, True),
        ({"model": "m", "messages": []}, DETERMINISTIC, False),  # default temperature is 1
        ({**BASE, "n": 2}, DETERMINISTIC, False),
        ({**BASE, "n": 2, "seed": 3}, DETERMINISTIC, False),
        ({**BASE, "n": 1}, DETERMINISTIC, True),
        ({**BASE, "temperature": 1.0}, ALWAYS, True),
        ({**BASE, "n": 3}, ALWAYS, True),
        (BASE, OFF, False),
    ],
)
def test_cacheable(body: dict[str, Any], policy: CacheRoutePolicy, expected: bool) -> None:
    assert cacheable(body, policy) is expected


def test_no_store_and_endpoints() -> None:
    assert cacheable(BASE, ALWAYS, "no-store") is False
    assert cacheable(BASE, DETERMINISTIC, "refresh") is True  # refresh still stores
    assert cacheable({"model": "e", "input": "x"}, DETERMINISTIC, endpoint="embeddings")
    assert not cacheable({"model": "e", "input": "x"}, OFF, endpoint="embeddings")
    assert not cacheable(BASE, ALWAYS, endpoint="models")
    assert not cacheable({**BASE, "background": True}, ALWAYS, endpoint="responses")


@pytest.mark.parametrize(
    ("value", "directive"),
    [("no-store", "no-store"), ("No-Store ", "no-store"), ("refresh", "refresh"), ("x", "default")],
)
def test_directive(value: str, directive: str) -> None:
    assert cache_directive({"x-sg-cache": value}) == directive
    assert cache_directive({}) == "default"


def test_storable() -> None:
    assert storable("chat/completions", {"choices": [{"message": {}}]})
    assert not storable("chat/completions", {"choices": []})
    assert not storable("chat/completions", {"error": {"message": "x"}})
    assert storable("embeddings", {"data": [{"embedding": [0.1]}]})
    assert storable("responses", {"status": "completed", "output": []})
    assert not storable("responses", {"status": "incomplete"})
