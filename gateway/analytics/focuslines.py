"""FOCUS rows of one daily charge line (`gateway.rollupformat.LINE_PARTS`).

- usage: one row per token direction (input, cached input, output, reasoning) of the served
  model's SKU, priced per 1M tokens at that SKU's own list and contracted prices (recorded on
  the line when the aggregator rolled it up), so ListCost = ListUnitPrice x PricingQuantity and
  ContractedCost = ContractedUnitPrice x PricingQuantity hold exactly on every row. The line's
  billed cost is split over its rows in proportion to their contracted cost (largest remainder:
  the rows sum to the nano). A line whose prices were unknown is one row priced as billed.
- cache: hits answered by spendgate's response cache, a charge of the gateway's own service.
  Priced on the list value of the answers served: PricingQuantity is that value in USD at unit
  price 1, so ListCost is what the answers would have cost and ListCost - EffectiveCost is the
  saving; EffectiveCost is what the hits were billed (`cache.hit_cost_fraction`).
- external: a posted cost, with its own charge category, service and provider.
Every value is a string; "" is null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from gateway.analytics.allocation import allocate
from gateway.analytics.taxonomy import (
    GATEWAY_SERVICE_CATEGORY,
    GATEWAY_SERVICE_SUBCATEGORY,
    INTERNAL_PROVIDER,
    ChargeClass,
)
from gateway.rollupformat import (
    LINE_CACHE,
    LINE_EXTERNAL,
    LINE_PARTS,
    LINE_USAGE,
    MISSING,
    parse_prices,
    split_parts,
)
from gateway.types import exact_decimal, nano_to_usd_str

BILLING_ACCOUNT = "spendgate"
BILLING_ACCOUNT_TYPE = "Chargeback"  # spendgate's account: the allocation view of the charges
SUB_ACCOUNT_TYPE = "Team"
CACHE_SERVICE = "spendgate response cache"
CACHE_SKU = "spendgate/response-cache"

# Values of x_SpendgateAllocation: what a row allocates (see docs/ledger.md).
PROVIDER_USAGE = "provider_usage"  # a provider's charge, also on that provider's own bill
GATEWAY_CACHE = "gateway_cache"  # spendgate's own charge for a cached answer
EXTERNAL_COST = "external_cost"  # a cost posted through the admin API
SHARED_COST_PART = "shared_cost"  # a team's part of a configured shared cost
SHARED_SPEND_PART = "shared_spend"  # spend of shared teams passed on to the others

# (direction, SkuMeter, index in the line's price lists)
_DIRECTIONS = (
    ("input", "Input Tokens", 0),
    ("cached-input", "Cached Input Tokens", 1),
    ("output", "Output Tokens", 2),
    ("reasoning", "Reasoning Tokens", 3),
)
_NANO_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Charge:
    """Where a row sits: the team (sub account), its invoice, the charge period, the billing
    period (a calendar month)."""

    team: str | None
    invoice: str
    period_start: str
    period_end: str
    billing_start: str
    billing_end: str


def line_rows(charge: Charge, value: str, m: Mapping[str, int]) -> list[dict[str, str]]:
    """The FOCUS rows of one charge line with metrics `m`."""
    line = dict(zip(LINE_PARTS, split_parts(value), strict=False))
    kind = line.get("kind")
    if kind == LINE_USAGE:
        return _usage_rows(charge, line, m)
    if kind == LINE_CACHE:
        return [_cache_row(charge, line, m)]
    if kind == LINE_EXTERNAL:
        return [_external_row(charge, line, m)]
    return []


def base_row(charge: Charge, cost_nano: int) -> dict[str, str]:
    """The columns every row fills the same way, its costs all `cost_nano`."""
    cost = nano_to_usd_str(cost_nano)
    return {
        "BillingAccountId": BILLING_ACCOUNT,
        "BillingAccountName": BILLING_ACCOUNT,
        "BillingAccountType": BILLING_ACCOUNT_TYPE,
        "BillingPeriodStart": charge.billing_start,
        "BillingPeriodEnd": charge.billing_end,
        "ChargePeriodStart": charge.period_start,
        "ChargePeriodEnd": charge.period_end,
        "BilledCost": cost,
        "EffectiveCost": cost,
        "ListCost": cost,
        "ContractedCost": cost,
        "BillingCurrency": "USD",
        "PricingCurrency": "USD",
        "InvoiceId": charge.invoice,
        "SubAccountId": charge.team or "",
        "SubAccountName": charge.team or "",
        "SubAccountType": SUB_ACCOUNT_TYPE if charge.team else "",
        "x_Team": charge.team or "",
    }


def json_text(value: object) -> str:
    """Compact JSON, non-ASCII characters escaped: FOCUS readers (the FinOps Foundation's
    validator among them) check string columns for ASCII, and an escape is the same JSON."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _usage_rows(
    charge: Charge, line: Mapping[str, str], m: Mapping[str, int]
) -> list[dict[str, str]]:
    list_prices = parse_prices(line.get("list_prices") or MISSING)
    contracted = parse_prices(line.get("contracted_prices") or MISSING, list_prices)
    prompt, completion = m.get("prompt", 0), m.get("completion", 0)
    cached = min(m.get("cached_prompt", 0), prompt)
    reasoning = min(m.get("reasoning", 0), completion)
    quantities = (prompt - cached, cached, completion - reasoning, reasoning)
    if list_prices is None or contracted is None or not any(quantities):
        return [_billed_row(charge, line, m, prompt + completion)]
    weights = {
        direction: quantities[i] * contracted[i]
        for direction, _, i in _DIRECTIONS
        if quantities[i] > 0
    }
    costs = allocate(m.get("cost", 0), weights)
    savings = allocate(m.get("savings", 0), weights)
    rows = []
    for direction, meter, i in _DIRECTIONS:
        if direction not in weights:
            continue
        row = _model_row(charge, line, costs[direction], savings[direction])
        quantity, list_price, contracted_price = quantities[i], list_prices[i], contracted[i]
        row.update(
            {
                "ListCost": exact_decimal(quantity * list_price, 15),
                "ContractedCost": exact_decimal(quantity * contracted_price, 15),
                "ChargeDescription": _description(meter, line),
                "PricingQuantity": exact_decimal(quantity, 6),
                "PricingUnit": "1000000 Tokens",
                "ListUnitPrice": exact_decimal(list_price, _NANO_DIGITS),
                "ContractedUnitPrice": exact_decimal(contracted_price, _NANO_DIGITS),
                "ConsumedQuantity": exact_decimal(quantity, 0),
                "ConsumedUnit": "Tokens",
                "SkuPriceId": f"{row['SkuId']}/{direction}",
                "SkuMeter": meter,
                "SkuPriceDetails": json_text(
                    {"x_ModelName": line.get("served_model", ""), "x_TokenType": direction}
                ),
            }
        )
        rows.append(row)
    return rows


def _billed_row(
    charge: Charge, line: Mapping[str, str], m: Mapping[str, int], tokens: int
) -> dict[str, str]:
    """Usage whose unit prices are unknown (the deployment was not in the config that rolled
    it up): one row priced per USD billed, so its costs still hold exactly."""
    cost = m.get("cost", 0)
    row = _model_row(charge, line, cost, m.get("savings", 0))
    row.update(
        {
            "ChargeDescription": _description("Tokens", line) + ", priced as billed",
            "PricingQuantity": exact_decimal(cost, _NANO_DIGITS),
            "PricingUnit": "USD Billed",
            "ListUnitPrice": "1.0",
            "ContractedUnitPrice": "1.0",
            "ConsumedQuantity": exact_decimal(tokens, 0),
            "ConsumedUnit": "Tokens",
            "SkuPriceId": f"{row['SkuId']}/billed",
            "SkuMeter": "Tokens",
            "SkuPriceDetails": json_text({"x_ModelName": line.get("served_model", "")}),
        }
    )
    return row


def _model_row(
    charge: Charge, line: Mapping[str, str], cost_nano: int, savings_nano: int
) -> dict[str, str]:
    provider = _given(line.get("provider")) or INTERNAL_PROVIDER
    served = _given(line.get("served_model"))
    deployment = _given(line.get("deployment"))
    row = base_row(charge, cost_nano)
    row.update(_who(line))
    row.update(
        {
            "ChargeCategory": "Usage",
            "ChargeFrequency": "Usage-Based",
            "PricingCategory": "Standard",
            "ServiceName": provider,
            "ServiceCategory": GATEWAY_SERVICE_CATEGORY,
            "ServiceSubcategory": GATEWAY_SERVICE_SUBCATEGORY,
            "ProviderName": provider,
            "PublisherName": provider,
            "ResourceId": deployment,
            "ResourceName": deployment,
            "ResourceType": "LLM Deployment" if deployment else "",
            "SkuId": f"{provider}/{served}",
            "x_SpendgateAllocation": PROVIDER_USAGE,
            "x_RequestedModel": _given(line.get("requested_model")),
            "x_ServedModel": served,
            "x_Deployment": deployment,
            "x_SavingsCost": nano_to_usd_str(savings_nano),
        }
    )
    return row


def _cache_row(charge: Charge, line: Mapping[str, str], m: Mapping[str, int]) -> dict[str, str]:
    listed = m.get("list_cost", 0)
    requested = _given(line.get("requested_model"))
    served = _given(line.get("served_model"))
    row = base_row(charge, m.get("cost", 0))
    row.update(_who(line))
    row.update(
        {
            "ListCost": nano_to_usd_str(listed),
            "ContractedCost": nano_to_usd_str(listed),
            "ChargeCategory": "Usage",
            "ChargeDescription": f"Answers to {requested or 'requests'} from the response "
            f"cache (first answered by {served or 'an upstream model'})",
            "ChargeFrequency": "Usage-Based",
            "PricingCategory": "Standard",
            "PricingQuantity": exact_decimal(listed, _NANO_DIGITS),
            "PricingUnit": "USD at List Price",
            "ListUnitPrice": "1.0",
            "ContractedUnitPrice": "1.0",
            "ConsumedQuantity": exact_decimal(m.get("cache_hits", 0), 0),
            "ConsumedUnit": "Requests",
            "ServiceName": CACHE_SERVICE,
            "ServiceCategory": GATEWAY_SERVICE_CATEGORY,
            "ServiceSubcategory": GATEWAY_SERVICE_SUBCATEGORY,
            "ProviderName": BILLING_ACCOUNT,
            "PublisherName": BILLING_ACCOUNT,
            "SkuId": CACHE_SKU,
            "SkuPriceId": f"{CACHE_SKU}/hit",
            "SkuMeter": "Cache Hits",
            "SkuPriceDetails": json_text({"x_PricedOn": "list value of the cached answer"}),
            "x_SpendgateAllocation": GATEWAY_CACHE,
            "x_RequestedModel": requested,
            "x_ServedModel": served,
            "x_Deployment": _given(line.get("deployment")),
            "x_SavingsCost": nano_to_usd_str(m.get("savings", 0)),
        }
    )
    return row


def _external_row(charge: Charge, line: Mapping[str, str], m: Mapping[str, int]) -> dict[str, str]:
    klass = ChargeClass.from_json(_given(line.get("charge")) or None)
    provider = _given(line.get("provider")) or INTERNAL_PROVIDER
    service = klass.service_name or provider
    count = m.get("external_count", 0)
    row = base_row(charge, m.get("cost", 0))
    row.update(_who(line))
    row.update(
        {
            "ChargeCategory": klass.category,
            "ChargeDescription": _given(line.get("description")) or "External cost",
            "ChargeFrequency": "Usage-Based" if klass.category == "Usage" else "One-Time",
            "ServiceName": service,
            "ServiceCategory": klass.service_category,
            "ServiceSubcategory": klass.service_subcategory,
            "ProviderName": provider,
            "PublisherName": provider,
            "x_SpendgateAllocation": EXTERNAL_COST,
        }
    )
    if klass.category in ("Usage", "Purchase"):
        # Identical posts share a line; the line carries their amount, so the unit price is
        # exact: `count` units at `amount` each.
        amount = exact_decimal(_int(line.get("amount")), _NANO_DIGITS)
        sku = f"external/{provider}/{service}"
        row.update(
            {
                "PricingCategory": "Standard",
                "PricingQuantity": exact_decimal(count, 0),
                "PricingUnit": "Units",
                "ListUnitPrice": amount,
                "ContractedUnitPrice": amount,
                "SkuId": sku,
                "SkuPriceId": sku,
                "SkuMeter": service,
            }
        )
    if klass.category == "Usage":
        row.update({"ConsumedQuantity": exact_decimal(count, 0), "ConsumedUnit": "Units"})
    elif klass.category == "Purchase":
        # An upfront purchase (prepaid credits, a commitment) is consumed by later usage rows:
        # FOCUS amortizes it there, so its own EffectiveCost is 0 (its BilledCost stays).
        row["EffectiveCost"] = nano_to_usd_str(0)
    return row


def _who(line: Mapping[str, str]) -> dict[str, str]:
    tags = _given(line.get("tags"))
    return {
        "Tags": json_text(orjson.loads(tags)) if tags else "",
        "x_Project": _given(line.get("project")),
        "x_Environment": _given(line.get("environment")),
        "x_Workload": _given(line.get("workload")),
    }


def _description(meter: str, line: Mapping[str, str]) -> str:
    served = _given(line.get("served_model")) or "an unknown model"
    text = f"{meter} of {served} on {_given(line.get('deployment')) or 'an unknown deployment'}"
    requested = _given(line.get("requested_model"))
    if requested and requested != served:
        text += f" (requested {requested})"
    return text


def _given(value: str | None) -> str:
    return "" if value is None or value == MISSING else value


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
