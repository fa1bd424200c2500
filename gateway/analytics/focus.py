"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) rows for one month: the allocation view
of everything spendgate bills its teams, reconciling with chargeback to the nano.

- Charge rows, per team and day, from the daily "line" rollups (`focuslines`): provider usage
  per token direction, response-cache hits, posted external costs. A request that cost nothing
  and consumed nothing (refused before any upstream call) is no charge and has no row.
- Allocation rows, per team for the month, from `chargeback`: each team's part of every shared
  cost, the spend of shared teams passed on (negative on the shared team, positive on the
  receivers). ChargeCategory "Adjustment"; the method in x_AllocatedMethodId/-Details.

Each team is a sub account with one invoice per month (InvoiceId spendgate-<team>-<YYYY-MM>):
the BilledCost of an invoice is that team's chargeback total. InvoiceIssuerName and
BillingAccountId are "spendgate" on every row and x_SpendgateAllocation says what a row
allocates, so a FinOps tool that also loads a provider's own bill can tell the two apart (see
docs/ledger.md). Costs are exact decimal strings in USD, date/times ISO 8601 UTC with exclusive
ends; "" is null.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.analytics.chargeback import SHARED_SPEND, Chargeback, chargeback
from gateway.analytics.focuslines import (
    CACHE_SERVICE,
    SHARED_COST_PART,
    SHARED_SPEND_PART,
    Charge,
    base_row,
    json_text,
    line_rows,
)
from gateway.analytics.rollupdata import RollupData, bucket_day, month_range
from gateway.analytics.taxonomy import (
    GATEWAY_SERVICE_CATEGORY,
    GATEWAY_SERVICE_SUBCATEGORY,
    INTERNAL_PROVIDER,
)
from gateway.config.model import Allocation, Config
from gateway.types import nano_to_usd_str

FOCUS_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrency",
    "PricingCurrencyListUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "InvoiceId",
    "InvoiceIssuerName",
    "ProviderName",
    "PublisherName",
    "ServiceName",
    "ServiceCategory",
    "ServiceSubcategory",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "RegionId",
    "RegionName",
    "AvailabilityZone",
    "SkuId",
    "SkuPriceId",
    "SkuMeter",
    "SkuPriceDetails",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountType",
    "CommitmentDiscountCategory",
    "CommitmentDiscountStatus",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountUnit",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "Tags",
    "x_SpendgateAllocation",
    "x_Team",
    "x_Project",
    "x_Environment",
    "x_Workload",
    "x_RequestedModel",
    "x_ServedModel",
    "x_Deployment",
    "x_SavingsCost",
    "x_AllocatedMethodId",
    "x_AllocatedMethodDetails",
    "x_AllocatedFrom",
)

SHARED_SPEND_SERVICE = "shared team spend"
_OTHER = ("Other", "Other (Other)")  # the service category of allocation rows


def focus_rows(data: RollupData, config: Config, month: str) -> list[dict[str, str]]:
    """The month's rows ("YYYY-MM"; `data` holds its daily "line", "team", "project" and
    "project_model" rollups): charge rows by day, team and line, then allocation rows by team.
    Every value a string, every column present ("" for null)."""
    first, last = month_range(month)
    billing = (_iso(first), _iso(last + timedelta(days=1)))
    rows: list[dict[str, str]] = []
    for team in data.teams():
        for bucket in data.buckets(team):
            day = bucket_day(bucket)
            charge = Charge(
                team, invoice_id(team, month), _iso(day), _iso(day + timedelta(1)), *billing
            )
            for value, metrics in sorted(data.values(team, "line", [bucket]).items()):
                rows.extend(line_rows(charge, value, metrics))
    rows.sort(key=lambda r: (r["ChargePeriodStart"], r["SubAccountId"]))
    rows.extend(_allocation_rows(chargeback(data, config, month), config, month, billing))
    for row in rows:
        # Who invoices the money is who provides it (a provider, spendgate for its cache, the
        # organisation for internal costs): FOCUS reads another issuer as a marketplace
        # charge paid to a third party, whose BilledCost would be 0.
        row["InvoiceIssuerName"] = row["ProviderName"]
        # Prices are in the billing currency: the pricing-currency columns repeat them.
        row["PricingCurrencyListUnitPrice"] = row.get("ListUnitPrice", "")
        row["PricingCurrencyContractedUnitPrice"] = row.get("ContractedUnitPrice", "")
        row["PricingCurrencyEffectiveCost"] = row["EffectiveCost"]
    return [{column: row.get(column, "") for column in FOCUS_COLUMNS} for row in rows]


def own_services(config: Config) -> dict[str, tuple[str, str]]:
    """ServiceName -> (ServiceCategory, ServiceSubcategory) of the rows spendgate writes itself:
    a posted cost naming one of these services must classify it the same (FOCUS gives every
    service one category)."""
    gateway = (GATEWAY_SERVICE_CATEGORY, GATEWAY_SERVICE_SUBCATEGORY)
    services = dict.fromkeys(config.providers, gateway)
    services[CACHE_SERVICE] = gateway
    for name in (*(c.name for c in config.shared_costs), SHARED_SPEND_SERVICE):
        services[name] = _OTHER
    return services


def invoice_id(team: str | None, month: str) -> str:
    """The id of a team's monthly chargeback statement, its invoice in FOCUS."""
    return f"spendgate-{team or 'unallocated'}-{month}"


def _allocation_rows(
    result: Chargeback, config: Config, month: str, billing: tuple[str, str]
) -> list[dict[str, str]]:
    costs = {c.name: c for c in config.shared_costs}
    shared_teams = sorted(s.team for s in result.statements if s.passed_on_nano)
    spend = config.shared_spend_allocation
    rows = []
    for s in result.statements:
        charge = Charge(s.team, invoice_id(s.team, month), *billing, *billing)
        for label, amount in s.allocations.items():
            if not amount:
                continue
            if label == SHARED_SPEND:
                rows.append(_shared_spend_row(charge, amount, shared_teams, spend))
            else:
                cost = costs[label]
                rows.append(
                    _shared_cost_row(charge, label, amount, cost.monthly_nano, cost.allocation)
                )
        if s.passed_on_nano:
            rows.append(_shared_spend_row(charge, s.passed_on_nano, [s.team], spend))
    if result.unallocated_nano:
        charge = Charge(None, invoice_id(None, month), *billing, *billing)
        for cost in config.shared_costs:
            if cost.monthly_nano:
                row = _shared_cost_row(
                    charge, cost.name, cost.monthly_nano, cost.monthly_nano, cost.allocation
                )
                row["x_AllocatedMethodId"] = "unallocated"
                rows.append(row)
    return rows


def _shared_cost_row(
    charge: Charge, name: str, amount: int, monthly: int, how: Allocation
) -> dict[str, str]:
    details: dict[str, Any] = {"SharedCost": name, "MonthlyCost": nano_to_usd_str(monthly)}
    if how.method == "fixed":
        details["Weights"] = dict(sorted(how.weights.items()))
    row = _allocation_row(charge, amount, name, how, details)
    row.update(
        {
            "ChargeDescription": f"{charge.team or 'No team'}'s part of shared cost {name} "
            f"({how.method} split of {nano_to_usd_str(monthly)} USD a month)",
            "ChargeFrequency": "Recurring",
            "x_SpendgateAllocation": SHARED_COST_PART,
            "x_AllocatedFrom": name,
        }
    )
    return row


def _shared_spend_row(
    charge: Charge, amount: int, shared_teams: list[str], how: Allocation
) -> dict[str, str]:
    details: dict[str, Any] = {"SharedTeams": shared_teams}
    if how.method == "fixed":
        details["Weights"] = dict(sorted(how.weights.items()))
    row = _allocation_row(charge, amount, SHARED_SPEND_SERVICE, how, details)
    teams = ", ".join(shared_teams)
    if amount < 0:
        description = f"Spend of shared team {teams}, passed on to the other teams"
    else:
        description = f"{charge.team}'s part of the spend of shared teams {teams}"
    row.update(
        {
            "ChargeDescription": f"{description} ({how.method} split)",
            "ChargeFrequency": "Usage-Based",
            "x_SpendgateAllocation": SHARED_SPEND_PART,
            "x_AllocatedFrom": teams,
        }
    )
    return row


def _allocation_row(
    charge: Charge, amount: int, service: str, how: Allocation, details: dict[str, Any]
) -> dict[str, str]:
    row = base_row(charge, amount)
    row.update(
        {
            "ChargeCategory": "Adjustment",
            "ServiceName": service,
            "ServiceCategory": _OTHER[0],
            "ServiceSubcategory": _OTHER[1],
            "ProviderName": INTERNAL_PROVIDER,
            "PublisherName": INTERNAL_PROVIDER,
            "x_AllocatedMethodId": how.method,
            "x_AllocatedMethodDetails": json_text(details),
        }
    )
    return row


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"
