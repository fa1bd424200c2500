"""What one upstream call cost: usage read from any provider's payload, times a Price.

`usage_from_openai` normalises the three usage shapes we see (Chat Completions / Completions /
Embeddings, the Responses API, Anthropic Messages) to OpenAI's semantics; `cost_nano` prices that
exactly in integer nano-USD, rounding once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.pricing.price import Price
from gateway.types import Usage

_TOKENS_PER_M = 1_000_000


def cost_nano(usage: Usage, price: Price) -> int:
    """Exact cost in nano-USD, rounded half up once over the whole sum.

    OpenAI semantics: prompt tokens include the cached ones and completion tokens include the
    reasoning ones, so each part is billed at its own price and never twice. Counts that make no
    sense (negative, cached > prompt, reasoning > completion) are upstream bugs; they are clamped
    so a bad payload can never produce a negative or inflated cost.
    """
    prompt = max(usage.prompt_tokens, 0)
    cached = min(max(usage.cached_prompt_tokens, 0), prompt)
    completion = max(usage.completion_tokens, 0)
    reasoning = min(max(usage.reasoning_tokens, 0), completion)
    # Prices are per 1M tokens, so this sum is nano-USD x 1M; dividing once keeps sub-nano parts.
    numerator = (
        (prompt - cached) * price.input_per_m
        + cached * price.cached_input_per_m
        + (completion - reasoning) * price.output_per_m
        + reasoning * price.reasoning_per_m
    )
    return (numerator + _TOKENS_PER_M // 2) // _TOKENS_PER_M


def usage_from_openai(usage: object) -> Usage:
    """Read an upstream `usage` object in any of the shapes we proxy; never raises.

    - Chat Completions / Completions / Embeddings: `prompt_tokens`, `completion_tokens`,
      `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`
      (litellm's translated responses may carry `cache_read_input_tokens` instead of the details).
    - Responses API: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
      `output_tokens_details.reasoning_tokens`; same semantics as chat.
    - Anthropic Messages: `input_tokens` EXCLUDES cache reads and cache writes, so prompt =
      input + cache_read + cache_creation and cached = cache_read. Cache writes are billed here at
      the input price (Anthropic charges them at a premium that `Price` does not model).
    Anything that is not a mapping, and any field that is missing, null, negative or not a number,
    reads as 0 (a fractional count is truncated): a weird payload yields what could be read.
    """
    if not isinstance(usage, Mapping):
        return Usage()
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        cached = _get(usage, "prompt_tokens_details", "cached_tokens")
        if cached is None:
            cached = usage.get("cache_read_input_tokens")
        return Usage(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            cached_prompt_tokens=_count(cached),
            completion_tokens=_count(usage.get("completion_tokens")),
            reasoning_tokens=_count(_get(usage, "completion_tokens_details", "reasoning_tokens")),
        )
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        cache_read = _count(usage.get("cache_read_input_tokens"))
        cache_write = _count(usage.get("cache_creation_input_tokens"))
        return Usage(
            prompt_tokens=_count(usage.get("input_tokens")) + cache_read + cache_write,
            cached_prompt_tokens=cache_read,
            completion_tokens=_count(usage.get("output_tokens")),
        )
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")),
        cached_prompt_tokens=_count(_get(usage, "input_tokens_details", "cached_tokens")),
        completion_tokens=_count(usage.get("output_tokens")),
        reasoning_tokens=_count(_get(usage, "output_tokens_details", "reasoning_tokens")),
    )


def _get(usage: Mapping[object, object], details: str, field: str) -> object:
    nested = usage.get(details)
    return nested.get(field) if isinstance(nested, Mapping) else None


def _count(value: object) -> int:
    """A token count as sent upstream: a non-negative int, or a finite float truncated; else 0."""
    if isinstance(value, bool):
        return 0  # bool is an int subclass, and never a count
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value):
        return max(int(value), 0)
    return 0
