"""FOCUS (FinOps Open Cost and Usage Specification, 1.x) rows from the daily "line" rollups.

One row per team, day and line (project / environment / workload / provider / deployment /
served and requested model / kind). Costs are exact decimal strings in USD; date/times are
ISO 8601 UTC ("2026-11-05T00:00:00Z"), ChargePeriodEnd and BillingPeriodEnd exclusive. Tokens
are priced per "1M Tokens" (PricingQuantity = tokens / 1e6, exact) and consumed in "Tokens".
spendgate-specific details are in `x_` columns, as the specification asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import orjson

from gateway.analytics.rollupdata import RollupData, bucket_day, month_range
from gateway.rollupformat import LINE_PARTS, MISSING, split_parts
from gateway.types import nano_to_usd_str

BILLING_ACCOUNT = "spendgate"

FOCUS_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ServiceName",
    "ServiceCategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Team",
    "x_Project",
    "x_Environment",
    "x_Workload",
    "x_RequestedModel",
    "x_PromptTokens",
    "x_CachedPromptTokens",
    "x_CompletionTokens",
    "x_ReasoningTokens",
    "x_Requests",
    "x_Errors",
    "x_CacheHits",
    "x_SavingsCost",
)

_EXTERNAL_SERVICE = "External"


def focus_rows(data: RollupData) -> list[dict[str, str]]:
    """Rows ordered by day, team, then line; every value a string (empty for null)."""
    rows: list[tuple[tuple[str, str, str], dict[str, str]]] = []
    for team in data.teams():
        for bucket in data.buckets(team):
            for value, metrics in sorted(data.values(team, "line", [bucket]).items()):
                if metrics.get("cost") or metrics.get("requests") or metrics.get("external_count"):
                    rows.append(((bucket, team, value), _row(team, bucket, value, metrics)))
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows]


def _row(team: str, bucket: str, value: str, m: Mapping[str, int]) -> dict[str, str]:
    line = dict(zip(LINE_PARTS, split_parts(value), strict=False))
    day = bucket_day(bucket)
    first, last = month_range(day.strftime("%Y-%m"))
    external = line.get("kind") == "external"
    provider = _given(line.get("provider"))
    deployment = _given(line.get("deployment"))
    served = _given(line.get("served_model"))
    requested = _given(line.get("requested_model"))
    tokens = m.get("prompt", 0) + m.get("completion", 0)
    cost = nano_to_usd_str(m.get("cost", 0))
    tags = {k: line[k] for k in ("project", "environment", "workload") if _given(line.get(k))}
    if external:
        service = provider or _EXTERNAL_SERVICE
        description = _given(line.get("description")) or "External cost"
        quantity, unit = str(m.get("external_count", 0)), "Charges"
        consumed, consumed_unit = "", ""
    else:
        service = provider
        description = f"{served or 'unknown model'} via {deployment or 'unknown deployment'}"
        if requested and requested != served:
            description += f" (requested {requested})"
        quantity, unit = _per_million(tokens), "1M Tokens"
        consumed, consumed_unit = str(tokens), "Tokens"
    return {
        "BillingAccountId": BILLING_ACCOUNT,
        "BillingAccountName": BILLING_ACCOUNT,
        "BillingPeriodStart": _iso(first),
        "BillingPeriodEnd": _iso(last + timedelta(days=1)),
        "ChargePeriodStart": _iso(day),
        "ChargePeriodEnd": _iso(day + timedelta(days=1)),
        "BilledCost": cost,
        "EffectiveCost": cost,
        "ListCost": nano_to_usd_str(m.get("list_cost", 0)),
        "ContractedCost": cost,
        "BillingCurrency": "USD",
        "ChargeCategory": "Usage",
        "ChargeClass": "",
        "ChargeDescription": description,
        "ChargeFrequency": "Usage-Based",
        "PricingCategory": "Standard",
        "PricingQuantity": quantity,
        "PricingUnit": unit,
        "ConsumedQuantity": consumed,
        "ConsumedUnit": consumed_unit,
        "ServiceName": service,
        "ServiceCategory": "AI and Machine Learning",
        "ProviderName": service,
        "PublisherName": service,
        "InvoiceIssuerName": service,
        "ResourceId": deployment,
        "ResourceName": deployment,
        "ResourceType": "" if external else "Model Deployment",
        "SkuId": served,
        "SkuPriceId": served,
        "SubAccountId": team,
        "SubAccountName": team,
        "Tags": orjson.dumps(tags).decode(),
        "x_Team": team,
        "x_Project": _given(line.get("project")),
        "x_Environment": _given(line.get("environment")),
        "x_Workload": _given(line.get("workload")),
        "x_RequestedModel": requested,
        "x_PromptTokens": str(m.get("prompt", 0)),
        "x_CachedPromptTokens": str(m.get("cached_prompt", 0)),
        "x_CompletionTokens": str(m.get("completion", 0)),
        "x_ReasoningTokens": str(m.get("reasoning", 0)),
        "x_Requests": str(m.get("requests", 0)),
        "x_Errors": str(m.get("errors", 0)),
        "x_CacheHits": str(m.get("cache_hits", 0)),
        "x_SavingsCost": nano_to_usd_str(m.get("savings", 0)),
    }


def _given(value: str | None) -> str:
    return "" if value is None or value == MISSING else value


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _per_million(tokens: int) -> str:
    whole, frac = divmod(tokens, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)
