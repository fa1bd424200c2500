"""The FOCUS price list of a config: each deployment's list price (litellm's table when its own
price is a negotiated override) and contracted price (the configured one), keyed by deployment
id and model."""

from __future__ import annotations

from gateway.aggregator.prices import PriceList
from gateway.config.loader import load_text
from gateway.pricing.price import Price
from gateway.pricing.table import PriceTable

TABLE = PriceTable(
    {
        "gpt-4o": Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000),
        "gpt-4o-mini": Price(150_000_000, 600_000_000, 75_000_000, 600_000_000),
    }
)
CONFIG = """
providers:
  openai: {kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}
  gpus: {kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}
models:
  gpt-4o:
    deployments: [{provider: openai, model: gpt-4o}]
  gpt-4o-mini:
    deployments: [{provider: openai, model: gpt-4o-mini}]
  llama:
    deployments: [{provider: gpus, model: llama-3.1-70b, id: pool-a}]
pricing:
  overrides:
    gpt-4o: {input_per_1m: 2.0, output_per_1m: 8.0}
    llama-3.1-70b: {input_per_1m: 0.59, output_per_1m: 0.79}
"""


def test_list_and_contracted_prices_per_deployment() -> None:
    prices = PriceList.from_config(load_text(CONFIG, "<test>", env={}, prices=TABLE), TABLE)
    assert len(prices) == 3
    negotiated = prices.get("openai/gpt-4o", "gpt-4o")
    assert negotiated is not None
    assert negotiated.list == TABLE["gpt-4o"]
    assert negotiated.contracted == Price(
        2_000_000_000, 8_000_000_000, 2_000_000_000, 8_000_000_000, "override"
    )
    listed = prices.get("openai/gpt-4o-mini", "gpt-4o-mini")
    assert listed is not None and listed.list == listed.contracted == TABLE["gpt-4o-mini"]
    # Self-hosted: no published price but its own.
    own = prices.get("pool-a", "llama-3.1-70b")
    assert own is not None and own.list == own.contracted
    assert own.contracted.input_per_m == 590_000_000
    # A deployment id now serving another model does not price the old model's events.
    assert prices.get("pool-a", "llama-3-70b") is None
    assert prices.get("openai/gpt-4.1", "gpt-4.1") is None
