"""The price list of every configured deployment, for the FOCUS export: per deployment, the
provider's published (list) price and the price spendgate bills (contracted).

The contracted price is the deployment's configured price (`Deployment.price`). The list price
is litellm's table price for the same model when the configured price is an override (a
negotiated rate), else the configured price itself: a self-hosted model priced by override has
no other published price. The aggregator writes both into the daily FOCUS lines as it rolls an
event up, so an export keeps the prices of the day even after the config changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.pricing.table import PriceTable, load_price_table

if TYPE_CHECKING:
    from gateway.config.model import Config
    from gateway.pricing.price import Price


@dataclass(frozen=True, slots=True)
class SkuPrice:
    list: Price  # the provider's published price
    contracted: Price  # what spendgate bills (the configured price)


class PriceList:
    """(deployment id, upstream model) -> SkuPrice, built once per config. The model is part
    of the key so that a deployment id reused for another model never prices the old one's
    events."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[tuple[str, str], SkuPrice]) -> None:
        self._prices = dict(prices)

    @classmethod
    def from_config(cls, config: Config, table: PriceTable | None = None) -> PriceList:
        table = load_price_table() if table is None else table
        prices: dict[tuple[str, str], SkuPrice] = {}
        for route in config.models.values():
            for d in route.deployments:
                listed = d.price
                if d.price.source == "override":
                    provider = config.providers.get(d.provider)
                    litellm_provider = provider.litellm_provider if provider else None
                    listed = table.lookup(d.model, litellm_provider) or d.price
                prices[d.id, d.model] = SkuPrice(listed, d.price)
        return cls(prices)

    def get(self, deployment: str, model: str) -> SkuPrice | None:
        return self._prices.get((deployment, model))

    def __len__(self) -> int:
        return len(self._prices)
