"""A model's price per token kind, in integer nano-USD per 1M tokens.

The one price type: the config compiles deployments' prices into it (from `table` or an override)
and `cost` bills usage with it. It lives here, under the config, so pricing never imports config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Price:
    """Prices in nano-USD per 1M tokens, so every published price is an exact integer.

    `prompt_tokens` include `cached_prompt_tokens` and `completion_tokens` include
    `reasoning_tokens` (OpenAI's usage semantics); `pricing.cost` bills each part at its price.
    """

    input_per_m: int
    output_per_m: int
    cached_input_per_m: int
    reasoning_per_m: int
    source: Literal["table", "override"] = "table"

    @property
    def dearest_input_per_m(self) -> int:
        """The most a prompt token can cost (cached input can be dearer than plain input in
        an override): what a worst case bills every prompt token at."""
        return max(self.input_per_m, self.cached_input_per_m)

    @property
    def dearest_output_per_m(self) -> int:
        """The most a completion token can cost (a reasoning token may be dearer)."""
        return max(self.output_per_m, self.reasoning_per_m)
