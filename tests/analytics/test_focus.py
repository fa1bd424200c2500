"""FOCUS rows from rollups built by hand: one row per token direction priced at the served SKU's
own prices (exact products), cache hits as the gateway's own service, external costs with their
charge category, user tags, allocation rows that reconcile with chargeback, and no row for a
request that cost and consumed nothing. On a fixed leap-year February, first and last second."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.aggregator.prices import PriceList, SkuPrice
from gateway.analytics.chargeback import chargeback
from gateway.analytics.focus import FOCUS_COLUMNS, focus_rows
from gateway.analytics.focuslines import CACHE_SERVICE
from gateway.analytics.rollupdata import RollupData, month_range
from gateway.analytics.taxonomy import ChargeClass
from gateway.config.model import (
    Allocation,
    Config,
    Price,
    ServerConfig,
    SharedCost,
    StoreConfig,
    TeamConfig,
)
from gateway.pricing.cost import cost_nano
from gateway.types import SpendEvent, Usage
from tests.ledger import event, external_event, rollup_data

MONTH = "2028-02"  # 29 days
START, END = month_range(MONTH)
FIRST_SECOND = int(datetime(2028, 2, 1, tzinfo=UTC).timestamp() * 1000)
LAST_SECOND = int(datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)

GPT4O_LIST = Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000)
GPT4O = Price(2_000_000_000, 8_000_000_000, 1_000_000_000, 8_000_000_000, "override")
MINI = Price(150_000_000, 600_000_000, 75_000_000, 600_000_000)
PRICES = PriceList(
    {
        ("openai/gpt-4o", "gpt-4o"): SkuPrice(GPT4O_LIST, GPT4O),
        ("openai/gpt-4o-mini", "gpt-4o-mini"): SkuPrice(MINI, MINI),
    }
)


def make_config(*shared_costs: SharedCost, **teams: TeamConfig) -> Config:
    return Config(
        source="<test>",
        server=ServerConfig(),
        store=StoreConfig(),
        providers={},
        models={},
        teams=teams or {"alpha": TeamConfig("alpha"), "beta": TeamConfig("beta")},
        shared_costs=shared_costs,
    )


def request(n: int, model: str = "gpt-4o", price: Price = GPT4O, **fields: Any) -> SpendEvent:
    usage = Usage(
        fields.pop("prompt_tokens", 1000),
        fields.pop("cached_prompt_tokens", 0),
        fields.pop("completion_tokens", 500),
        fields.pop("reasoning_tokens", 0),
    )
    cost = cost_nano(usage, price)
    values: dict[str, Any] = {
        "ts_ms": FIRST_SECOND,
        "served_model": model,
        "deployment": f"openai/{model}",
        "prompt_tokens": usage.prompt_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_nano": cost,
        "list_cost_nano": cost,
        **fields,
    }
    return event(n, **values)


def external(n: int, amount: int, charge: ChargeClass | None = None, **fields: Any) -> SpendEvent:
    charged = charge.to_json() if charge else None
    return external_event(n, amount, ts_ms=LAST_SECOND, charge=charged, **fields)


def rows_of(events: list[SpendEvent], config: Config | None = None) -> list[dict[str, str]]:
    data = rollup_data(events, START, END, PRICES)
    return focus_rows(data, config or make_config(), MONTH)


def nano(value: str) -> int:
    return int(Decimal(value) * 1_000_000_000)


def test_usage_is_one_row_per_token_direction_at_exact_unit_prices() -> None:
    e = request(1, prompt_tokens=1000, cached_prompt_tokens=200, completion_tokens=500)
    e2 = request(2, reasoning_tokens=100, completion_tokens=400, project="o-series")
    rows = rows_of([e, e2])
    assert all(tuple(r) == FOCUS_COLUMNS for r in rows)
    by_meter = {r["SkuMeter"]: r for r in rows if r["x_Project"] == "search"}
    assert set(by_meter) == {"Input Tokens", "Cached Input Tokens", "Output Tokens"}
    reasoning = [r for r in rows if r["SkuMeter"] == "Reasoning Tokens"]
    assert [r["ConsumedQuantity"] for r in reasoning] == ["100.0"]
    cached = by_meter["Cached Input Tokens"]
    assert (cached["PricingQuantity"], cached["PricingUnit"]) == ("0.0002", "1000000 Tokens")
    assert (cached["ListUnitPrice"], cached["ContractedUnitPrice"]) == ("1.25", "1.0")
    assert cached["ConsumedQuantity"] == "200.0" and cached["ConsumedUnit"] == "Tokens"
    assert cached["SkuId"] == "openai/gpt-4o"
    assert cached["SkuPriceId"] == "openai/gpt-4o/cached-input"
    assert json.loads(cached["SkuPriceDetails"]) == {
        "x_ModelName": "gpt-4o",
        "x_TokenType": "cached-input",
    }
    for r in rows:
        quantity = Decimal(r["PricingQuantity"])
        assert Decimal(r["ListUnitPrice"]) * quantity == Decimal(r["ListCost"])
        assert Decimal(r["ContractedUnitPrice"]) * quantity == Decimal(r["ContractedCost"])
        assert r["ChargeCategory"] == "Usage" and r["ChargeFrequency"] == "Usage-Based"
        assert r["ServiceName"] == r["ProviderName"] == r["InvoiceIssuerName"] == "openai"
        assert r["ServiceSubcategory"] == "Generative AI"
        assert r["x_SpendgateAllocation"] == "provider_usage"
        assert r["ResourceId"] == "openai/gpt-4o" and r["ResourceType"] == "LLM Deployment"
    # The billed cost is split over the rows exactly, in proportion to their contracted cost.
    assert sum(nano(r["BilledCost"]) for r in rows) == e.cost_nano + e2.cost_nano
    output = by_meter["Output Tokens"]
    assert nano(output["BilledCost"]) == 500 * 8_000  # 500 tokens at $8 / 1M


def test_a_downgraded_request_carries_the_served_models_own_list_price() -> None:
    """gpt-4o asked for, gpt-4o-mini served: the SKU is the mini's, at the mini's list price;
    what the downgrade saved against gpt-4o is x_SavingsCost."""
    listed = cost_nano(Usage(1000, 0, 500, 0), GPT4O)
    e = request(1, "gpt-4o-mini", MINI, requested_model="gpt-4o", optimization="downgrade")
    e.list_cost_nano = listed
    rows = rows_of([e])
    assert {r["SkuId"] for r in rows} == {"openai/gpt-4o-mini"}
    assert {r["x_RequestedModel"] for r in rows} == {"gpt-4o"}
    assert sorted(r["ListUnitPrice"] for r in rows) == ["0.15", "0.6"]
    assert sum(Decimal(r["ListCost"]) for r in rows) == Decimal(e.cost_nano) / 10**9
    assert sum(nano(r["x_SavingsCost"]) for r in rows) == listed - e.cost_nano
    assert "requested gpt-4o" in rows[0]["ChargeDescription"]


def test_a_request_refused_before_any_upstream_call_is_no_charge() -> None:
    refused = event(
        2,
        ts_ms=FIRST_SECOND,
        status=429,
        outcome="error",
        served_model="",
        provider="",
        deployment="",
        prompt_tokens=0,
        completion_tokens=0,
        cost_nano=0,
        list_cost_nano=0,
    )
    data = rollup_data([refused], START, END, PRICES)
    assert data.team_metrics("alpha")["errors"] == 1  # showback still counts it
    rows = focus_rows(data, make_config(), MONTH)
    assert rows == []


def test_cache_hits_are_a_charge_of_the_gateways_own_service() -> None:
    hits = [
        request(n, "gpt-4o-mini", MINI, cache="hit", provider="cache", optimization="cache")
        for n in (1, 2)
    ]
    for hit, listed in zip(hits, (1_000_001, 2_000_000), strict=True):
        hit.prompt_tokens = hit.completion_tokens = 0
        hit.list_cost_nano, hit.cost_nano = listed, listed // 10  # hit_cost_fraction 0.1
    (row,) = rows_of(hits)
    assert row["ServiceName"] == CACHE_SERVICE
    assert row["ProviderName"] == row["PublisherName"] == row["InvoiceIssuerName"] == "spendgate"
    assert row["x_SpendgateAllocation"] == "gateway_cache"
    assert (row["PricingQuantity"], row["PricingUnit"]) == ("0.003000001", "USD at List Price")
    assert row["ListUnitPrice"] == row["ContractedUnitPrice"] == "1.0"
    assert row["ListCost"] == "0.003000001" and row["EffectiveCost"] == "0.000300000"
    assert nano(row["ListCost"]) - nano(row["EffectiveCost"]) == nano(row["x_SavingsCost"])
    assert (row["ConsumedQuantity"], row["ConsumedUnit"]) == ("2.0", "Requests")
    assert row["x_ServedModel"] == "gpt-4o-mini" and row["ResourceId"] == ""


def test_external_costs_carry_their_charge_category_service_and_provider() -> None:
    events = [
        external(1, 1_234_000_000_001, ChargeClass("Usage", "Compute", "Virtual Machines", "VMs")),
        external(2, 99_990_000_000, ChargeClass("Purchase"), provider="Acme AI"),
        external(
            3,
            12_500_000_000,
            ChargeClass(
                "Tax",
                service_name="VMs",
                service_category="Compute",
                service_subcategory="Virtual Machines",
            ),
            provider="CoreWeave",
        ),
        external(4, -20_000_000_000, ChargeClass("Credit"), provider="Acme AI"),
        external(5, 5_000_000_000),  # posted before costs were classified: the defaults
    ]
    rows = {r["ChargeDescription"]: r for r in rows_of(events)}
    usage = rows["posted cost 1"]
    assert (usage["ServiceName"], usage["ProviderName"]) == ("VMs", "internal")
    assert (usage["ServiceCategory"], usage["ServiceSubcategory"]) == (
        "Compute",
        "Virtual Machines",
    )
    assert usage["PricingQuantity"] == usage["ConsumedQuantity"] == "1.0"
    assert usage["ListUnitPrice"] == usage["ListCost"] == "1234.000000001"
    assert usage["ConsumedUnit"] == usage["PricingUnit"] == "Units"
    purchase = rows["posted cost 2"]
    assert purchase["ChargeFrequency"] == "One-Time" and purchase["ConsumedQuantity"] == ""
    assert purchase["BilledCost"] == "99.990000000" and purchase["EffectiveCost"] == "0.000000000"
    assert purchase["ServiceName"] == purchase["ProviderName"] == "Acme AI"
    tax = rows["posted cost 3"]
    assert tax["PricingQuantity"] == tax["ListUnitPrice"] == tax["SkuId"] == ""
    assert tax["ListCost"] == tax["EffectiveCost"] == tax["BilledCost"] == "12.500000000"
    credit = rows["posted cost 4"]
    assert credit["BilledCost"] == credit["ListCost"] == "-20.000000000"
    assert credit["ChargeCategory"] == "Credit" and credit["PricingCategory"] == ""
    old = rows["posted cost 5"]
    assert (old["ChargeCategory"], old["ServiceCategory"]) == ("Usage", "AI and Machine Learning")
    assert old["ServiceName"] == old["ProviderName"] == "internal"
    assert {r["x_SpendgateAllocation"] for r in rows.values()} == {"external_cost"}
    assert {r["ChargePeriodStart"] for r in rows.values()} == {"2028-02-29T00:00:00Z"}
    assert {r["ChargePeriodEnd"] for r in rows.values()} == {"2028-03-01T00:00:00Z"}


def test_identical_external_costs_share_a_row_at_their_unit_price() -> None:
    rows = rows_of([external(n, 1_000_000_001, description="seat") for n in (1, 2, 3)])
    (row,) = rows
    assert (row["PricingQuantity"], row["ListUnitPrice"]) == ("3.0", "1.000000001")
    assert row["ListCost"] == row["BilledCost"] == "3.000000003"


def test_user_tags_reach_tags_one_row_per_tag_set() -> None:
    events = [
        request(1, tags={"cost_center": "cc-1001", "experiment": "exp-a"}),
        request(2, tags={"cost_center": "cc-1001", "experiment": "exp-b"}),
        external(3, 7_000_000_000, tags={"run": "7", "owner": "équipe"}),
        request(4),
    ]
    tags = {r["Tags"] for r in rows_of(events)}
    assert tags == {
        '{"cost_center":"cc-1001","experiment":"exp-a"}',
        '{"cost_center":"cc-1001","experiment":"exp-b"}',
        '{"owner":"\\u00e9quipe","run":"7"}',  # ASCII: an escape is the same JSON
        "",
    }


def test_usage_of_an_unpriced_deployment_is_one_row_priced_as_billed() -> None:
    e = request(1, "llama-3.1-70b", Price(590_000_000, 790_000_000, 590_000_000, 790_000_000))
    (row,) = rows_of([e])
    assert (row["PricingUnit"], row["ListUnitPrice"]) == ("USD Billed", "1.0")
    assert Decimal(row["PricingQuantity"]) == Decimal(row["ListCost"]) == Decimal(row["BilledCost"])
    assert row["ConsumedQuantity"] == "1500.0" and row["SkuMeter"] == "Tokens"


def test_allocation_rows_reconcile_with_chargeback_per_invoice() -> None:
    config = make_config(
        SharedCost("platform-fee", 1_000_000_000_007, Allocation("even")),
        SharedCost("support", 300_000_000_000, Allocation("fixed", {"alpha": 2, "beta": 1})),
        SharedCost("cache-infra", 45_500_000_000),  # proportional to direct spend
        alpha=TeamConfig("alpha"),
        beta=TeamConfig("beta"),
        platform=TeamConfig("platform", shared=True),
    )
    events = [
        request(1),
        request(2, team="beta", ts_ms=LAST_SECOND),
        request(3, team="platform"),
        external(4, 3_000_000_000, team="beta"),
    ]
    data = rollup_data(events, START, END, PRICES)
    rows = focus_rows(data, config, MONTH)
    statements = chargeback(data, config, MONTH).statements
    billed: dict[str, int] = {}
    for r in rows:
        billed[r["InvoiceId"]] = billed.get(r["InvoiceId"], 0) + nano(r["BilledCost"])
    assert billed == {f"spendgate-{s.team}-{MONTH}": s.total_nano for s in statements}
    allocations = [r for r in rows if r["ChargeCategory"] == "Adjustment"]
    assert {(r["SubAccountId"], r["x_AllocatedFrom"]) for r in allocations} == {
        (team, source)
        for team in ("alpha", "beta")
        for source in ("platform-fee", "support", "cache-infra", "platform")
    } | {("platform", "platform")}
    passed_on = next(r for r in allocations if r["SubAccountId"] == "platform")
    assert nano(passed_on["BilledCost"]) == -events[2].cost_nano
    assert passed_on["x_SpendgateAllocation"] == "shared_spend"
    support = next(r for r in allocations if r["x_AllocatedFrom"] == "support")
    assert support["x_AllocatedMethodId"] == "fixed"
    assert json.loads(support["x_AllocatedMethodDetails"])["Weights"] == {"alpha": 2, "beta": 1}
    for r in allocations:
        assert (r["ChargePeriodStart"], r["ChargePeriodEnd"]) == (
            "2028-02-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
        )
        assert r["ServiceCategory"] == "Other" and r["ProviderName"] == "internal"
        assert r["ListCost"] == r["EffectiveCost"] == r["BilledCost"]


def test_shared_costs_without_a_paying_team_are_unallocated_rows() -> None:
    config = make_config(
        SharedCost("platform-fee", 5_000_000_000), platform=TeamConfig("platform", shared=True)
    )
    rows = rows_of([request(1, team="platform")], config)
    fee = next(r for r in rows if r["x_AllocatedFrom"] == "platform-fee")
    assert (fee["SubAccountId"], fee["SubAccountType"]) == ("", "")
    assert fee["InvoiceId"] == f"spendgate-unallocated-{MONTH}"
    assert fee["BilledCost"] == "5.000000000" and fee["x_AllocatedMethodId"] == "unallocated"


def test_rows_round_trip_as_csv_with_decimal_typed_numbers() -> None:
    events = [request(1), external(2, 1_000_000_000), request(3, completion_tokens=1_000_000)]
    rows = rows_of(events)
    numbers = ("BilledCost", "ListCost", "PricingQuantity", "ConsumedQuantity", "ListUnitPrice")
    for r in rows:
        for column in numbers:
            assert not r[column] or "." in r[column], (column, r[column])
    out = io.StringIO()
    writer = csv.DictWriter(out, FOCUS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == rows


def test_no_rollups_no_rows() -> None:
    empty = RollupData("d", START, END, {})
    assert focus_rows(empty, make_config(), MONTH) == []
