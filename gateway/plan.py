"""What a request will do, decided before any money is held: the `Plan` the pipeline makes from
the body (model, tier decision, output cap, cache key) and hands to the stages that carry it out,
the streaming relay among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.model import ModelRoute
from gateway.pricing.price import Price
from gateway.routing.tiers import TierDecision

# The output cap each endpoint understands; chat's max_completion_tokens also bounds reasoning.
_CAP_FIELDS = {
    "chat/completions": ("max_completion_tokens", ("max_tokens", "max_completion_tokens")),
    "completions": ("max_tokens", ("max_tokens",)),
    "responses": ("max_output_tokens", ("max_output_tokens",)),
}


@dataclass(slots=True)
class Plan:
    """What the request will do, decided before any money is held."""

    body: dict[str, Any]
    route: ModelRoute  # the model that serves it
    list_price: Price  # the requested model's price: list cost, so savings are visible
    prompt_tokens: int | None
    prompt_bound: int  # tokens the prompt cannot exceed, from the body's size alone
    decision: TierDecision | None = None
    cache_key: str | None = None
    cache_ttl_s: float = 0.0
    refresh: bool = False  # x-sg-cache: refresh: skip the lookup, store the fresh answer


def with_token_cap(endpoint: str, body: dict[str, Any], cap: int) -> dict[str, Any]:
    """Bound the output of a request that sets no limit, so its worst-case cost is known."""
    fields = _CAP_FIELDS.get(endpoint)
    if fields is None or any(body.get(name) is not None for name in fields[1]):
        return body
    return {**body, fields[0]: cap}
