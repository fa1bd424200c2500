"""Which requests the response cache may answer, and the exact-match key they are stored under.

The key is a sha256 over a canonical JSON of every request field that can change the answer.
It is built from a deny-list (fields known not to change the output are dropped) rather than an
allow-list, so a parameter we have never heard of keeps two requests apart instead of wrongly
serving one's answer to the other. Keys are namespaced per team unless the route is shared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from gateway.config.model import CacheRoutePolicy
from gateway.types import Principal

CacheDirective = Literal["default", "no-store", "refresh"]
CACHE_HEADER = "x-sg-cache"

# Fields that never change what the model answers: transport (stream, stream_options), caller
# identification (user, metadata, safety_identifier), upstream-side storage and hints about
# OpenAI's own prompt cache or latency class. `model` is added back explicitly.
_IGNORED = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
)
# Endpoints whose answers are stored. Embeddings are deterministic by nature.
CACHEABLE_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "responses"})
_SHARED_NAMESPACE = "shared"


def cache_directive(headers: Mapping[str, str]) -> CacheDirective:
    """The client's `x-sg-cache` request header: `no-store` (neither read nor write the cache),
    `refresh` (skip the lookup, store the fresh answer), anything else is the default."""
    value = headers.get(CACHE_HEADER, "").strip().lower()
    if value == "no-store":
        return "no-store"
    if value == "refresh":
        return "refresh"
    return "default"


def namespace_for(principal: Principal, policy: CacheRoutePolicy) -> str:
    """Where a request's entries live: its team's namespace, or one shared by every team."""
    return _SHARED_NAMESPACE if policy.shared else "t:" + principal.team


def cacheable(
    body: Mapping[str, Any],
    policy: CacheRoutePolicy,
    directive: CacheDirective = "default",
    endpoint: str = "chat/completions",
) -> bool:
    """Whether this request may be answered from (and stored in) the cache at all.

    Never with `x-sg-cache: no-store`, on a route whose mode is `off`, on an endpoint we do not
    cache, or for a Responses request running in the background. Mode `always` caches any other
    request. Mode `deterministic` caches only requests that ask for a reproducible answer
    (temperature 0, or a seed) and at most one choice (n > 1 asks for variety); embeddings are
    always deterministic.
    """
    if directive == "no-store" or policy.mode == "off" or endpoint not in CACHEABLE_ENDPOINTS:
        return False
    if endpoint == "responses" and body.get("background") is True:
        return False  # the answer is a pending job, not the output
    if policy.mode == "always" or endpoint == "embeddings":
        return True
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return False
    temperature = body.get("temperature")
    seeded = body.get("seed") is not None
    return seeded or (isinstance(temperature, int | float) and temperature == 0)


def cache_key(endpoint: str, body: Mapping[str, Any], namespace: str, variant: str = "") -> str:
    """The exact-match key: "<namespace>:<sha256 hex>".

    `body["model"]` must be the exposed model name the client sent (not a deployment's). Pass
    the tier decision's model as `variant` when a tier routes this request, so a request that
    asked for premium never receives an economy model's answer. Top-level nulls are dropped and
    integral floats written as ints (temperature 0.0 == 0), so equivalent requests share a key.
    """
    document = {
        "endpoint": endpoint,
        "model": body.get("model"),
        "namespace": namespace,
        "variant": variant,
        "request": canonical_request(body),
    }
    digest = hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{namespace}:{digest}"


def canonical_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a request that can change its answer, normalized: what identical requests
    share (the cache key's and the duplicate fingerprint's content)."""
    canonical: dict[str, Any] = {}
    for name, value in body.items():
        if name in _IGNORED or value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        canonical[name] = value
    return canonical


def storable(endpoint: str, answer: Mapping[str, Any]) -> bool:
    """Whether an upstream's successful JSON answer is worth storing: a complete result of the
    endpoint's kind, never an error, nor a Responses object that is still in progress."""
    if "error" in answer and answer["error"] is not None:
        return False
    if endpoint == "embeddings":
        return isinstance(answer.get("data"), list) and bool(answer["data"])
    if endpoint == "responses":
        return answer.get("status") == "completed"
    choices = answer.get("choices")
    return isinstance(choices, list) and bool(choices)
