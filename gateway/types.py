"""Plain data that crosses module boundaries on the request path.

Principals (who is calling), usage (what was consumed) and spend records (what it cost). Money is
integer nano-USD (1 USD = 1_000_000_000) everywhere it is stored or summed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

NANO_PER_USD = 1_000_000_000

EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


def usd_to_nano(usd: float | str) -> int:
    """Convert a USD amount given at the edge (YAML, a header) to nano-USD, rounding half up."""
    from decimal import ROUND_HALF_UP, Decimal

    return int((Decimal(str(usd)) * NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def nano_to_usd_str(nano: int) -> str:
    """Render nano-USD exactly as a decimal string (no float rounding): 1234 -> '0.000001234'."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is billed to. `key_id` is a short public id of the key, never the secret."""

    key_id: str
    team: str
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    name: str | None = None


@dataclass(slots=True)
class Usage:
    """Tokens consumed by one upstream call. `estimated` is set when we counted with tiktoken."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
