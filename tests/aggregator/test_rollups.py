"""Rollup increments of a known set of events against totals computed by hand, to the nano."""

from __future__ import annotations

from collections import Counter

import orjson

from gateway import rediskeys
from gateway.aggregator.prices import PriceList, SkuPrice
from gateway.aggregator.rollups import RollupBatch, expire_at, increments
from gateway.pricing.price import Price
from gateway.rollupformat import (
    LINE_METRICS,
    LINE_PARTS,
    MAX_LINE_TAGS,
    hour_bucket,
    parse_prices,
    split_field,
    split_parts,
)
from gateway.types import SpendEvent
from tests.ledger import T0_MS, event, external_event


def _events() -> list[SpendEvent]:
    return [
        event(1, tags={"exp": "a"}),
        event(
            2,
            served_model="gpt-4o-mini",
            deployment="openai/gpt-4o-mini",
            cost_nano=30_000,
            cached_prompt_tokens=40,
            optimization="tiering",
            tags={"exp": "a", "run": "7"},
        ),
        event(3, project=None, cost_nano=0, cache="hit", optimization="cache"),
        event(
            4,
            status=502,
            outcome="error",
            cost_nano=0,
            list_cost_nano=0,
            prompt_tokens=0,
            completion_tokens=0,
        ),
        external_event(5, 5_000_000_000, list_cost_nano=0, description="GPU hours | run 7"),
        event(6, revenue_nano=1_000_000),
        event(7, team="beta", cost_nano=7, list_cost_nano=11, reasoning_tokens=5),
    ]


# gpt-4o at a contracted price, gpt-4o-mini at its list price: lines of both kinds.
_PRICES = PriceList(
    {
        ("openai/gpt-4o", "gpt-4o"): SkuPrice(
            Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000),
            Price(2_000_000_000, 8_000_000_000, 1_000_000_000, 8_000_000_000, "override"),
        ),
        ("openai/gpt-4o-mini", "gpt-4o-mini"): SkuPrice(
            Price(150_000_000, 600_000_000, 75_000_000, 600_000_000),
            Price(150_000_000, 600_000_000, 75_000_000, 600_000_000),
        ),
    }
)


def _totals(events: list[SpendEvent], prices: PriceList | None = None) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for e in events:
        for key, field, amount in increments(e, prices):
            assert amount != 0, (key, field)
            totals[key, field] += amount
    return totals


def test_daily_project_totals_by_hand() -> None:
    totals = _totals(_events())
    day = hour_bucket(T0_MS)[:8]
    project = rediskeys.rollup("alpha", "d", day, "project")
    got = {f: a for (k, f), a in totals.items() if k == project}
    assert got == {
        # e1 450_000 + e2 30_000 + e5 5 USD external + e6 450_000
        "search|cost": 5_000_930_000,
        "search|list_cost": 1_350_000,  # e1, e2, e6 (e4 and e5 have none)
        "search|savings": 420_000,  # e2: 450_000 - 30_000
        "search|savings:tiering": 420_000,
        "search|prompt": 300,
        "search|cached_prompt": 40,
        "search|completion": 60,
        "search|requests": 4,  # e1, e2, e4, e6: an external cost is no request
        "search|errors": 1,
        "search|external": 5_000_000_000,
        "search|external_count": 1,
        "search|revenue": 1_000_000,
        "search|revenue_requests": 1,
        "-|list_cost": 450_000,  # e3, a cache hit without a project
        "-|savings": 450_000,
        "-|savings:cache": 450_000,
        "-|prompt": 100,
        "-|completion": 20,
        "-|requests": 1,
        "-|cache_hits": 1,
    }


def test_team_model_tag_and_chargeback_detail() -> None:
    totals = _totals(_events())
    hour = hour_bucket(T0_MS)
    day = hour[:8]
    for granularity, bucket in (("h", hour), ("d", day)):
        team = rediskeys.rollup("alpha", granularity, bucket, "team")
        assert totals[team, "alpha|cost"] == 450_000 + 30_000 + 5_000_000_000 + 450_000
        assert totals[team, "alpha|requests"] == 5
    served = rediskeys.rollup("alpha", "d", day, "served_model")
    assert totals[served, "gpt-4o-mini|cost"] == 30_000
    assert totals[served, "gpt-4o|cost"] == 900_000
    assert totals[served, "-|external"] == 5_000_000_000
    tag = rediskeys.rollup("alpha", "d", day, "tag")
    assert totals[tag, "exp=a|cost"] == 480_000
    assert totals[tag, "run=7|cost"] == 30_000
    detail = rediskeys.rollup("alpha", "d", day, "project_model")
    assert totals[detail, "search|gpt-4o|cost"] == 930_000
    assert totals[detail, "search|-|cost"] == 5_000_000_000
    beta = rediskeys.rollup("beta", "d", day, "model")
    assert totals[beta, "gpt-4o|cost"] == 7
    assert totals[beta, "gpt-4o|savings"] == 4
    assert totals[beta, "gpt-4o|reasoning"] == 5
    # FOCUS lines are daily only, and carry the description of an external cost.
    assert not any(k.endswith(":line") and ":r:h:" in k for k, _ in totals)
    line = rediskeys.rollup("alpha", "d", day, "line")
    external = [f for (k, f) in totals if k == line and f.endswith("|external_count")]
    assert len(external) == 1
    value, metric = split_field(external[0])
    assert metric == "external_count"
    # A line keeps only what its FOCUS rows need: counts of requests stay in showback's.
    assert {split_field(f)[1] for (k, f) in totals if k == line} <= LINE_METRICS
    parts = dict(zip(LINE_PARTS, split_parts(value), strict=True))
    assert (parts["kind"], parts["description"]) == ("external", "GPU hours | run 7")


def test_batch_sums_equal_increments() -> None:
    batch = RollupBatch()
    for e in _events():
        batch.add(e)
    flat = Counter({(k, f): a for k, fields in batch.cells.items() for f, a in fields.items()})
    assert flat == _totals(_events())
    hour_start = T0_MS - T0_MS % 3_600_000
    day_start = T0_MS - T0_MS % 86_400_000
    for key in batch.cells:
        granularity = key.split(":r:")[1][0]
        start = hour_start if granularity == "h" else day_start
        assert batch.expiry[key] == expire_at(granularity, start)


def test_a_batch_of_alike_events_sums_them_once_and_exactly() -> None:
    # One key's traffic, as a batch usually is: the same values in every dimension, different
    # amounts, across two hours and with one different project among them. Each group's
    # metrics are summed before they are spread over the fields: the sums must be the same.
    alike = [
        event(
            n,
            ts_ms=T0_MS + (n % 2) * 3_600_000,
            project="other" if n == 5 else "search",
            cost_nano=1_000 + n,
            list_cost_nano=2_000 + 3 * n,
            prompt_tokens=10 + n,
            cache="hit" if n % 4 == 0 else "miss",
            status=500 if n == 7 else 200,
        )
        for n in range(40)
    ]
    # Alike but for one thing each: the same tags in another order, an answer that consumed
    # nothing (it has no FOCUS line), another key, model, deployment, provider, team...
    alike += [
        event(40, tags={"exp": "a", "run": "7"}),
        event(41, tags={"run": "7", "exp": "a"}),
        event(42, key_id="key_000000000002"),
        event(43, served_model="gpt-4o-mini"),
        event(44, deployment="openai/gpt-4o-mini"),
        event(45, status=502, outcome="error", cost_nano=0, prompt_tokens=0, completion_tokens=0),
        event(46, provider="azure"),
        event(47, team="beta"),
        event(48, environment="staging"),
        event(49, workload="batch"),
        event(50, requested_model="gpt-4o-mini"),
        event(51, kind="import"),
        event(52, tags={"exp": ["a", "b"]}),  # a foreign writer's tag value: no string
    ]
    batch = RollupBatch(_PRICES)
    for e in alike:
        batch.add(e)
    flat = Counter({(k, f): a for k, fields in batch.items() for f, a in fields.items()})
    assert flat == _totals(alike, _PRICES)
    assert len(batch) == len(flat)


def test_expiry_is_absolute_from_bucket_end() -> None:
    start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    assert expire_at("h", start) == start // 1000 + 3600 + 35 * 86400
    day = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
    assert expire_at("d", day) == day // 1000 + 86400 + 400 * 86400


def _lines(e: SpendEvent, prices: PriceList | None = None) -> dict[str, dict[str, int]]:
    """The event's FOCUS lines: {value: {metric: amount}}."""
    out: dict[str, dict[str, int]] = {}
    for key, hash_field, amount in increments(e, prices):
        if key.endswith(":line"):
            value, metric = split_field(hash_field)
            out.setdefault(value, {})[metric] = amount
    return out


def _parts(value: str) -> dict[str, str]:
    return dict(zip(LINE_PARTS, split_parts(value), strict=True))


def test_a_line_carries_the_served_deployments_prices_when_rolled_up() -> None:
    listed = Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000)
    contracted = Price(2_000_000_000, 8_000_000_000, 1_000_000_000, 8_000_000_000, "override")
    prices = PriceList({("openai/gpt-4o", "gpt-4o"): SkuPrice(listed, contracted)})
    ((value, metrics),) = _lines(event(1), prices).items()
    parts = _parts(value)
    assert parts["kind"] == "usage"
    assert parts["list_prices"] == "2.5,1.25,10,10"  # USD per 1M tokens
    assert parts["contracted_prices"] == "2,1,8,8"
    assert parse_prices(parts["list_prices"]) == (
        2_500_000_000,
        1_250_000_000,
        10_000_000_000,
        10_000_000_000,
    )
    # A deployment billed at its list price says so in one character.
    same = PriceList({("openai/gpt-4o", "gpt-4o"): SkuPrice(listed, listed)})
    ((value, _),) = _lines(event(1), same).items()
    assert _parts(value)["contracted_prices"] == "="
    assert metrics["prompt"] == 100 and metrics["cost"] == 450_000
    # Without a price list, or for a deployment it does not know, the prices are unknown.
    for unknown in (None, PriceList({("openai/gpt-4o", "gpt-4o-2024"): SkuPrice(listed, listed)})):
        ((value, _),) = _lines(event(1), unknown).items()
        assert _parts(value)["list_prices"] == _parts(value)["contracted_prices"] == "-"


def test_a_request_that_cost_and_consumed_nothing_has_no_line() -> None:
    refused = event(
        1,
        status=429,
        outcome="error",
        cost_nano=0,
        list_cost_nano=0,
        prompt_tokens=0,
        completion_tokens=0,
        served_model="",
        provider="",
        deployment="",
    )
    assert _lines(refused) == {}
    assert any(key.endswith(":team") for key, _, _ in increments(refused))  # still counted


def test_a_cache_hit_is_a_cache_line_of_no_provider() -> None:
    hit = event(1, cache="hit", provider="cache", cost_nano=0, optimization="cache")
    ((value, metrics),) = _lines(hit).items()
    parts = _parts(value)
    assert (parts["kind"], parts["provider"], parts["served_model"]) == ("cache", "-", "gpt-4o")
    assert metrics["cache_hits"] == 1 and metrics["list_cost"] == 450_000


def test_a_line_keeps_the_users_tags_sorted_and_bounded() -> None:
    tags = {f"k{i:03d}": str(i) for i in range(MAX_LINE_TAGS + 5)}
    ((value, _),) = _lines(event(1, tags={"b": "2", "a": "x|y"})).items()
    assert _parts(value)["tags"] == '{"a":"x|y","b":"2"}'
    ((value, _),) = _lines(event(2, tags=tags)).items()
    kept = orjson.loads(_parts(value)["tags"])
    assert list(kept) == sorted(tags)[:MAX_LINE_TAGS]
    ((value, _),) = _lines(event(3)).items()
    assert _parts(value)["tags"] == "-"
