"""Model prices as exact integer nano-USD per 1M tokens: litellm's table and YAML overrides.

Reads litellm's bundled `model_prices_and_context_window_backup.json` as data (located by
`bundled`, never by importing litellm), converts its USD-per-token floats exactly, and turns
overrides given in USD per 1M tokens into the same `Price`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import orjson

from gateway.pricing.bundled import PRICE_TABLE_FILE, litellm_dir
from gateway.pricing.price import Price
from gateway.types import NANO_PER_USD

# USD per token -> nano-USD per 1M tokens.
_PER_TOKEN_SCALE = Decimal(NANO_PER_USD) * 1_000_000
# USD per 1M tokens -> nano-USD per 1M tokens.
_PER_M_SCALE = Decimal(NANO_PER_USD)

# Entries that are not models: litellm documents its schema with an all-zero "sample_spec".
_NOT_MODELS = frozenset({"sample_spec"})


class PriceTable(Mapping[str, Price]):
    """Model name -> Price, read-only. `problem` says why the table is empty, if it is."""

    __slots__ = ("_prices", "path", "problem")

    def __init__(
        self,
        prices: Mapping[str, Price],
        *,
        path: Path | None = None,
        problem: str | None = None,
    ) -> None:
        self._prices = dict(prices)
        self.path = path
        self.problem = problem

    def __getitem__(self, model: str) -> Price:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self)} models, path={self.path!r}, problem={self.problem!r})"

    def lookup(self, model: str, provider: str | None = None) -> Price | None:
        """The price of `model`, trying "provider/model", "model", then the part after a prefix.

        The provider-qualified key is tried first because it is the more specific price (litellm
        keys e.g. "azure/gpt-4o" or "bedrock/..." separately from the first-party model). The
        last try maps a prefixed name such as "openai/gpt-4o" to "gpt-4o".
        """
        candidates = [model]
        if provider:
            candidates.insert(0, f"{provider}/{model}")
        _, slash, tail = model.partition("/")
        if slash and tail:
            candidates.append(tail)
        for name in candidates:
            price = self._prices.get(name)
            if price is not None:
                return price
        return None


@functools.cache
def load_price_table() -> PriceTable:
    """litellm's bundled price table, read once per process; empty (with `problem`) if absent."""
    directory = litellm_dir()
    if directory is None:
        return PriceTable(
            {},
            problem=(
                "litellm is not installed, so its bundled price table is unavailable: give every "
                "model a price override in the config's pricing section"
            ),
        )
    return read_price_table(directory / PRICE_TABLE_FILE)


def price_table_problem() -> str | None:
    """Why the bundled price table is empty (a message for start-up logs), or None if it loaded."""
    return load_price_table().problem


def read_price_table(path: Path) -> PriceTable:
    """Parse a litellm-format price file; entries without token prices are skipped, not errors."""
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        return PriceTable({}, path=path, problem=f"cannot read the price table {path}: {exc}")
    except orjson.JSONDecodeError as exc:
        return PriceTable({}, path=path, problem=f"the price table {path} is not JSON: {exc}")
    if not isinstance(raw, dict):
        return PriceTable({}, path=path, problem=f"the price table {path} is not a JSON object")
    prices: dict[str, Price] = {}
    for name, entry in raw.items():
        if name in _NOT_MODELS:
            continue
        price = _price_from_entry(entry)
        if price is not None:
            prices[name] = price
    problem = None if prices else f"the price table {path} has no token-priced models"
    return PriceTable(prices, path=path, problem=problem)


def price_from_override(
    input_per_1m: float | str,
    output_per_1m: float | str,
    cached_input_per_1m: float | str | None = None,
    reasoning_per_1m: float | str | None = None,
) -> Price:
    """A Price from USD per 1M tokens as written in YAML; cached defaults to input, reasoning to
    output. Raises ValueError on a negative, non-finite or non-numeric price.

    Values go through `str` before `Decimal`, so 0.15 becomes exactly 150_000_000 nano per 1M.
    """
    input_nano = _override_nano(input_per_1m, "input")
    output_nano = _override_nano(output_per_1m, "output")
    cached_nano = (
        input_nano
        if cached_input_per_1m is None
        else _override_nano(cached_input_per_1m, "cached input")
    )
    reasoning_nano = (
        output_nano if reasoning_per_1m is None else _override_nano(reasoning_per_1m, "reasoning")
    )
    return Price(
        input_per_m=input_nano,
        output_per_m=output_nano,
        cached_input_per_m=cached_nano,
        reasoning_per_m=reasoning_nano,
        source="override",
    )


def _override_nano(value: object, what: str) -> int:
    nano = _scaled(value, _PER_M_SCALE)
    if nano is None:
        raise ValueError(
            f"{what} price must be a non-negative number of USD per 1M tokens, got {value!r}"
        )
    return nano


def _price_from_entry(entry: object) -> Price | None:
    """One table entry -> Price, or None when it has no usable input and output token price."""
    if not isinstance(entry, dict):
        return None
    input_nano = _scaled(entry.get("input_cost_per_token"), _PER_TOKEN_SCALE)
    output_nano = _scaled(entry.get("output_cost_per_token"), _PER_TOKEN_SCALE)
    if input_nano is None or output_nano is None:
        return None  # image, audio, per-request or per-second pricing: not billed by token here
    cached_nano = _scaled(entry.get("cache_read_input_token_cost"), _PER_TOKEN_SCALE)
    reasoning_nano = _scaled(entry.get("output_cost_per_reasoning_token"), _PER_TOKEN_SCALE)
    return Price(
        input_per_m=input_nano,
        output_per_m=output_nano,
        cached_input_per_m=input_nano if cached_nano is None else cached_nano,
        reasoning_per_m=output_nano if reasoning_nano is None else reasoning_nano,
        source="table",
    )


def _scaled(value: object, scale: Decimal) -> int | None:
    """`value * scale` rounded half up, exactly; None unless value is a finite number >= 0.

    `str` first: Decimal(2.5e-06) would carry the binary float's error, Decimal("2.5e-06") not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return int((amount * scale).to_integral_value(rounding=ROUND_HALF_UP))
