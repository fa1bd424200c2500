"""FOCUS 1.2 MUST rules that apply to spendgate's export, checked in Python, each named after the
rule id the FinOps Foundation's focus-validator (2.2.1, model 1.2.0.1) gives it. The conformance
test runs these always, and the validator itself where it is installed.

A FOCUS export is read as CSV: every value a string, "" is null. `check(rows, columns)` returns
{rule id: [violation, ...]} for every rule that fails (at most a few examples each).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation

from gateway.analytics.taxonomy import CHARGE_CATEGORIES, SERVICE_SUBCATEGORIES

Row = Mapping[str, str]

# Columns the dataset must have: MUST for every dataset, and the conditional ones whose criteria
# spendgate meets (sub accounts, tags, usage measurement, unit pricing, a public price list,
# negotiated prices, resource types, account names).
REQUIRED_COLUMNS = {
    "CostAndUsage-D-004-C": "ListUnitPrice",
    "CostAndUsage-D-005-M": "BillingAccountName",
    "CostAndUsage-D-006-M": "BilledCost",
    "CostAndUsage-D-008-M": "ChargeCategory",
    "CostAndUsage-D-009-M": "BillingPeriodStart",
    "CostAndUsage-D-010-M": "BillingPeriodEnd",
    "CostAndUsage-D-011-C": "ConsumedQuantity",
    "CostAndUsage-D-019-C": "SubAccountId",
    "CostAndUsage-D-021-M": "PublisherName",
    "CostAndUsage-D-022-C": "PricingCategory",
    "CostAndUsage-D-023-M": "InvoiceIssuerName",
    "CostAndUsage-D-024-M": "BillingAccountId",
    "CostAndUsage-D-025-M": "ChargeDescription",
    "CostAndUsage-D-026-M": "ChargeClass",
    "CostAndUsage-D-027-O": "ChargeFrequency",
    "CostAndUsage-D-028-M": "ChargePeriodEnd",
    "CostAndUsage-D-029-C": "SubAccountName",
    "CostAndUsage-D-030-M": "ContractedCost",
    "CostAndUsage-D-031-M": "EffectiveCost",
    "CostAndUsage-D-032-M": "ListCost",
    "CostAndUsage-D-033-O": "InvoiceId",
    "CostAndUsage-D-034-C": "ContractedUnitPrice",
    "CostAndUsage-D-035-M": "BillingCurrency",
    "CostAndUsage-D-036-M": "PricingQuantity",
    "CostAndUsage-D-037-M": "ChargePeriodStart",
    "CostAndUsage-D-038-M": "ProviderName",
    "CostAndUsage-D-039-C": "ResourceType",
    "CostAndUsage-D-040-M": "ServiceCategory",
    "CostAndUsage-D-041-M": "ServiceName",
    "CostAndUsage-D-042-O": "ServiceSubcategory",
    "CostAndUsage-D-043-C": "ResourceId",
    "CostAndUsage-D-044-C": "ResourceName",
    "CostAndUsage-D-058-C": "SkuPriceId",
    "CostAndUsage-D-059-C": "SkuMeter",
    "CostAndUsage-D-060-C": "SkuId",
    "CostAndUsage-D-061-C": "SkuPriceDetails",
    "CostAndUsage-D-064-C": "Tags",
    "CostAndUsage-D-066-C": "ConsumedUnit",
    "CostAndUsage-D-068-M": "PricingUnit",
}
DECIMAL_COLUMNS = {
    "BilledCost-C-001-M": "BilledCost",
    "EffectiveCost-C-001-M": "EffectiveCost",
    "ListCost-C-001-M": "ListCost",
    "ContractedCost-C-001-M": "ContractedCost",
    "ListUnitPrice-C-001-M": "ListUnitPrice",
    "ContractedUnitPrice-C-002-M": "ContractedUnitPrice",
    "PricingQuantity-C-001-M": "PricingQuantity",
    "ConsumedQuantity-C-001-M": "ConsumedQuantity",
}
DATETIME_COLUMNS = {
    "BillingPeriodStart-C-002-M": "BillingPeriodStart",
    "BillingPeriodEnd-C-002-M": "BillingPeriodEnd",
    "ChargePeriodStart-C-002-M": "ChargePeriodStart",
    "ChargePeriodEnd-C-002-M": "ChargePeriodEnd",
}
NOT_NULL = {
    "BilledCost-C-003-M": "BilledCost",
    "BillingAccountId-C-001-M": "BillingAccountId",
    "BillingAccountName-C-003-C": "BillingAccountName",
    "BillingCurrency-C-004-M": "BillingCurrency",
    "BillingPeriodEnd-C-003-M": "BillingPeriodEnd",
    "BillingPeriodStart-C-003-M": "BillingPeriodStart",
    "ChargeCategory-C-002-M": "ChargeCategory",
    "ChargeFrequency-C-002-M": "ChargeFrequency",
    "ChargePeriodEnd-C-003-M": "ChargePeriodEnd",
    "ChargePeriodStart-C-003-M": "ChargePeriodStart",
    "ContractedCost-C-003-M": "ContractedCost",
    "EffectiveCost-C-003-M": "EffectiveCost",
    "InvoiceIssuerName-C-003-M": "InvoiceIssuerName",
    "ListCost-C-003-M": "ListCost",
    "ProviderName-C-003-M": "ProviderName",
    "PublisherName-C-003-M": "PublisherName",
    "ServiceCategory-C-002-M": "ServiceCategory",
    "ServiceName-C-003-M": "ServiceName",
    "ServiceSubcategory-C-002-M": "ServiceSubcategory",
}
# Null exactly when ChargeCategory is Tax; never null for Usage and Purchase.
PRICED_ON_USAGE_AND_PURCHASE = {
    "ListUnitPrice": ("ListUnitPrice-C-004-C", "ListUnitPrice-C-005-C"),
    "ContractedUnitPrice": ("ContractedUnitPrice-C-005-C", "ContractedUnitPrice-C-006-C"),
    "PricingQuantity": ("PricingQuantity-C-004-C", "PricingQuantity-C-005-C"),
    "PricingCategory": ("PricingCategory-C-003-C", "PricingCategory-C-004-C"),
    "SkuId": ("SkuId-C-004-C", "SkuId-C-005-C"),
    "SkuPriceId": ("SkuPriceId-C-004-C", "SkuPriceId-C-005-C"),
}
# (rule id, column, null exactly when this column is null)
NULL_TOGETHER = (
    ("PricingUnit-C-005-C", "PricingUnit", "PricingQuantity"),
    ("ConsumedUnit-C-005-C", "ConsumedUnit", "ConsumedQuantity"),
    ("ResourceType-C-004-C", "ResourceType", "ResourceId"),
    ("SubAccountName-C-004-C", "SubAccountName", "SubAccountId"),
)
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE]-?\d+)?")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_COUNT_UNIT = r"[A-Za-z][A-Za-z0-9]*(?: [A-Za-z][A-Za-z0-9]*)*"
_TIME_UNITS = "Years|Months|Days|Hours|Minutes|Seconds"
_UNIT = re.compile(
    rf"({_COUNT_UNIT}|[0-9]+ {_COUNT_UNIT}|{_COUNT_UNIT}-({_TIME_UNITS})|{_COUNT_UNIT}/[A-Z][a-z]+)"
)


def check(rows: Sequence[Row], columns: Iterable[str]) -> dict[str, list[str]]:
    """{rule id: violations} of every MUST rule in this module that the rows break."""
    found: dict[str, list[str]] = {}
    present = list(columns)
    for rule, column in REQUIRED_COLUMNS.items():
        if column not in present:
            found[rule] = [f"column {column} is missing"]
    for rule, column in (
        ("ColumnHandling-A-010-M", c) for c in present if not re.fullmatch(r"[A-Z][A-Za-z]+", c)
    ):
        if not column.startswith("x_"):
            found.setdefault(rule, []).append(f"custom column {column} lacks the x_ prefix")
    for test in _ROW_RULES:
        for i, row in enumerate(rows):
            try:
                problems = list(test(row))
            except InvalidOperation:  # reported by _rule_numbers
                continue
            for problem in problems:
                rule, _, reason = problem.partition(": ")
                found.setdefault(rule, []).append(f"row {i}: {reason}")
    for test in _DATASET_RULES:
        for problem in test(rows):
            rule, _, reason = problem.partition(": ")
            found.setdefault(rule, []).append(reason)
    return {rule: problems[:3] for rule, problems in found.items()}


def _decimal(value: str) -> Decimal:
    return Decimal(value)


def _rule_numbers(row: Row) -> Iterable[str]:
    for rule, column in DECIMAL_COLUMNS.items():
        value = row.get(column, "")
        # A whole number without a decimal point loads as an integer (the type rule fails).
        if value and (not _NUMBER.fullmatch(value) or not re.search(r"[.eE]", value)):
            yield f"{rule}: {column}={value!r} is not a decimal"


def _rule_datetimes(row: Row) -> Iterable[str]:
    for rule, column in DATETIME_COLUMNS.items():
        if row.get(column) and not _DATETIME.fullmatch(row[column]):
            yield f"{rule}: {column}={row[column]!r} is not YYYY-MM-DDTHH:mm:ssZ"


def _rule_not_null(row: Row) -> Iterable[str]:
    for rule, column in NOT_NULL.items():
        if not row.get(column, "").strip():
            yield f"{rule}: {column} is null"


def _rule_priced(row: Row) -> Iterable[str]:
    category = row.get("ChargeCategory")
    correction = row.get("ChargeClass") == "Correction"
    for column, (null_on_tax, required) in PRICED_ON_USAGE_AND_PURCHASE.items():
        value = row.get(column, "")
        if category == "Tax" and value:
            yield f"{null_on_tax}: {column} is {value!r} on a Tax row"
        if category in ("Usage", "Purchase") and not correction and not value:
            yield f"{required}: {column} is null on a {category} row"


def _rule_consumed(row: Row) -> Iterable[str]:
    usage = row.get("ChargeCategory") == "Usage"
    unused = row.get("CommitmentDiscountStatus") == "Unused"
    value = row.get("ConsumedQuantity", "")
    if (not usage or unused) and value:
        yield f"ConsumedQuantity-C-004-C: {value!r} on a {row.get('ChargeCategory')} row"
    if usage and not unused and row.get("ChargeClass") != "Correction" and not value:
        yield "ConsumedQuantity-C-006-C: null on a Usage row"


def _rule_null_together(row: Row) -> Iterable[str]:
    for rule, column, other in NULL_TOGETHER:
        if bool(row.get(column)) != bool(row.get(other)):
            yield f"{rule}: {column}={row.get(column)!r} with {other}={row.get(other)!r}"
    if row.get("SkuMeter") and not row.get("SkuId"):
        yield "SkuMeter-C-004-C: SkuMeter without SkuId"
    if row.get("SkuPriceDetails") and not row.get("SkuPriceId"):
        yield "SkuPriceDetails-C-004-C: SkuPriceDetails without SkuPriceId"


def _rule_products(row: Row) -> Iterable[str]:
    if row.get("ChargeClass") == "Correction" or not row.get("PricingQuantity"):
        return
    quantity = _decimal(row["PricingQuantity"])
    for rule, price, cost in (
        ("ListCost-C-009-C", "ListUnitPrice", "ListCost"),
        ("ContractedCost-C-009-C", "ContractedUnitPrice", "ContractedCost"),
    ):
        if row.get(price) and _decimal(row[price]) * quantity != _decimal(row[cost]):
            yield f"{rule}: {row[price]} x {quantity} != {cost} {row[cost]}"


def _rule_values(row: Row) -> Iterable[str]:
    if row.get("ChargeCategory") not in CHARGE_CATEGORIES:
        yield f"ChargeCategory-C-003-M: {row.get('ChargeCategory')!r}"
    if row.get("ChargeFrequency") not in ("One-Time", "Recurring", "Usage-Based"):
        yield f"ChargeFrequency-C-003-M: {row.get('ChargeFrequency')!r}"
    if row.get("ChargeCategory") == "Purchase" and row.get("ChargeFrequency") == "Usage-Based":
        yield "ChargeFrequency-C-004-C: a Purchase is not Usage-Based"
    if row.get("ChargeClass") not in ("", "Correction"):
        yield f"ChargeClass-C-005-C: {row.get('ChargeClass')!r}"
    pricing = row.get("PricingCategory", "")
    if pricing and pricing not in ("Standard", "Committed", "Dynamic", "Other"):
        yield f"PricingCategory-C-007-M: {pricing!r}"
    category = row.get("ServiceCategory", "")
    if category not in SERVICE_SUBCATEGORIES:
        yield f"ServiceCategory-C-003-M: {category!r}"
    elif row.get("ServiceSubcategory") not in SERVICE_SUBCATEGORIES[category]:
        yield f"ServiceSubcategory-C-004-M: {row.get('ServiceSubcategory')!r} in {category!r}"
    for rule, column in (
        ("BillingCurrency-C-003-M", "BillingCurrency"),
        ("PricingCurrency-C-003-M", "PricingCurrency"),
    ):
        if row.get(column) and not re.fullmatch(r"[A-Z]{3}", row[column]):
            yield f"{rule}: {column} {row[column]!r} is not an ISO 4217 code"
    for rule, column in (
        ("ListUnitPrice-C-008-M", "ListUnitPrice"),
        ("ContractedUnitPrice-C-009-C", "ContractedUnitPrice"),
    ):
        if row.get(column) and _decimal(row[column]) < 0:
            yield f"{rule}: {column} {row[column]} is negative"


def _rule_costs(row: Row) -> Iterable[str]:
    if row.get("ProviderName") != row.get("InvoiceIssuerName") and _decimal(row["BilledCost"]):
        yield "BilledCost-C-005-C: a third party's charge (issuer is not the provider) not 0"
    if row.get("ChargeCategory") == "Purchase" and _decimal(row["EffectiveCost"]):
        yield "EffectiveCost-C-005-C: a Purchase's EffectiveCost is not 0"
    if row.get("ChargeCategory") not in ("Usage", "Purchase") and not row.get("ListUnitPrice"):
        for rule, column in (
            ("ListCost-C-008-C", "ListCost"),
            ("ContractedCost-C-008-C", "ContractedCost"),
            ("EffectiveCost-C-010-C", "EffectiveCost"),
        ):
            if _decimal(row[column]) != _decimal(row["BilledCost"]):
                yield f"{rule}: {column} {row[column]} != BilledCost {row['BilledCost']}"
    if row.get("ChargePeriodStart", "") >= row.get("ChargePeriodEnd", ""):
        yield "ChargePeriodEnd-C-004-M: the end is not after the start"
    if row.get("BillingPeriodStart", "") >= row.get("BillingPeriodEnd", ""):
        yield "BillingPeriodEnd-C-004-M: the end is not after the start"


def _rule_formats(row: Row) -> Iterable[str]:
    for rule, column in (
        ("Tags-C-001-M", "Tags"),
        ("SkuPriceDetails-C-001-M", "SkuPriceDetails"),
    ):
        value = row.get(column, "")
        if not value:
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            yield f"{rule}: {column} is not JSON"
            continue
        if not isinstance(parsed, dict) or any(isinstance(v, dict | list) for v in parsed.values()):
            yield f"KeyValueFormat-A-004-M: {column} {value!r} is not a flat object"
    for rule, column in (
        ("PricingUnit-C-003-O", "PricingUnit"),
        ("ConsumedUnit-C-003-O", "ConsumedUnit"),
    ):
        if row.get(column) and not _UNIT.fullmatch(row[column]):
            yield f"{rule}: {column} {row[column]!r} is not in FOCUS UnitFormat"
    for column in ("ChargeDescription", "ServiceName", "ProviderName", "Tags", "SkuPriceDetails"):
        if not row.get(column, "").isascii():  # the validator's StringHandling check
            yield f"StringHandling-A-001-M: {column} {row[column]!r} is not ASCII"


def _one_per(rule: str, key: str, value: str) -> Callable[[Sequence[Row]], list[str]]:
    def test(rows: Sequence[Row]) -> list[str]:
        seen: dict[str, set[str]] = {}
        for row in rows:
            if row.get(key):
                seen.setdefault(row[key], set()).add(row.get(value, ""))
        return [
            f"{rule}: {key} {k!r} has {value} {sorted(v)}" for k, v in seen.items() if len(v) > 1
        ]

    return test


# Each yields "<rule id>: <what is wrong>" per violation.
_ROW_RULES: tuple[Callable[[Row], Iterable[str]], ...] = (
    _rule_numbers,
    _rule_datetimes,
    _rule_not_null,
    _rule_priced,
    _rule_consumed,
    _rule_null_together,
    _rule_products,
    _rule_values,
    _rule_costs,
    _rule_formats,
)
_DATASET_RULES: tuple[Callable[[Sequence[Row]], list[str]], ...] = (
    _one_per("ServiceName-C-005-C", "ServiceName", "ServiceCategory"),
    _one_per("ServiceName-C-008-C", "ServiceName", "ServiceSubcategory"),
    _one_per("SkuPriceId-C-008-M", "SkuPriceId", "SkuId"),
)
