"""The aggregator against a real Redis: exact totals, crash and reclaim without double counting,
two consumers at once, poison entries, key expiry, and the embedded store."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import rediskeys
from gateway.aggregator.consumer import Aggregator, PoisonEntry, parse_entry
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.aggregator.rollups import increments
from gateway.config.model import AggregatorConfig
from gateway.rollupformat import hour_bucket
from gateway.slices import Slices
from gateway.store.connect import close_store, open_store
from gateway.types import SpendEvent
from tests.ledger import NOW, T0_MS, backlog, drain, event, produce, produce_raw, rollup_hash

GROUP = rediskeys.EVENTS_GROUP
DAY = hour_bucket(T0_MS)[:8]
FAST = AggregatorConfig(batch_size=50, block_ms=10, claim_idle_s=60)


def expected(events: list[SpendEvent]) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for e in events:
        for key, field, amount in increments(e):
            totals[key, field] += amount
    return totals


async def stored(redis: Redis, teams: set[str]) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for team in teams:
        async for raw_key in redis.scan_iter(match=f"sg:{{t:{team}}}:r:*", count=1000):
            key = raw_key.decode()
            for field, value in (await redis.hgetall(key)).items():
                totals[key, field.decode()] = int(value)
    return totals


def random_events(n: int, seed: int = 7) -> list[SpendEvent]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        cost = rng.randrange(0, 5_000_000)
        events.append(
            event(
                i,
                ts_ms=T0_MS + rng.randrange(0, 3 * 3_600_000),
                team=rng.choice(("alpha", "beta", "gamma")),
                project=rng.choice(("search", "chat", None)),
                requested_model=rng.choice(("gpt-4o", "o3-mini")),
                cost_nano=cost,
                list_cost_nano=cost + rng.randrange(0, 1_000_000),
                optimization=rng.choice((None, "cache", "tiering")),
                prompt_tokens=rng.randrange(0, 4000),
                completion_tokens=rng.randrange(0, 800),
                status=rng.choice((200, 200, 200, 429)),
                tags={"exp": rng.choice("abc")},
            )
        )
    return events


async def test_applies_every_event_exactly(redis: Redis) -> None:
    events = random_events(400)
    await produce(redis, events)
    assert await drain(redis, FAST) == 400
    assert await stored(redis, {"alpha", "beta", "gamma"}) == expected(events)
    alpha = [e for e in events if e.team == "alpha"]
    team = await rollup_hash(redis, "alpha", "d", DAY, "team")
    assert team["alpha|cost"] == sum(e.cost_nano for e in alpha)
    assert team["alpha|requests"] == len(alpha)
    # Nothing left pending, and a second pass applies nothing more.
    assert await backlog(redis, ["alpha", "beta", "gamma"]) == 0
    assert await drain(redis, FAST) == 0
    assert await stored(redis, {"alpha", "beta", "gamma"}) == expected(events)


async def test_an_aggregator_that_gives_its_core_way_applies_the_same(redis: Redis) -> None:
    """`spendgate aggregate` slices its work (`gateway.slices`): with a slice of zero it gives
    way at every point it may, at least twice per event (parsing it, adding it to the batch)
    and once per rollup key it writes, and the totals are exact as ever."""
    events = random_events(300, seed=11)
    await produce(redis, events)
    yields: list[int] = []
    aggregator = Aggregator(
        redis,
        FAST,
        consumer="sliced",
        clock=NOW,
        slices=Slices(0.0, yield_cpu=lambda: yields.append(1)),
    )
    applied = 0
    while applied < len(events):
        done = await aggregator.step()
        assert done, "an aggregator that gives way still makes progress"
        applied += done
    keys = {key for key, _ in expected(events)}
    assert len(yields) >= 2 * len(events) + len(keys)
    assert await stored(redis, {"alpha", "beta", "gamma"}) == expected(events)
    assert await backlog(redis, ["alpha", "beta", "gamma"]) == 0


async def test_crash_mid_batch_then_reclaim_then_stale_apply(redis: Redis) -> None:
    events = [event(i, cost_nano=1_000 + i) for i in range(120)]
    await produce(redis, events)
    a = Aggregator(redis, FAST, consumer="A", clock=NOW)
    await a.refresh_streams()
    stream = rediskeys.events_stream("alpha")
    # A reads a batch and "crashes" before applying it: the entries stay pending to A.
    reply = await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=80)
    stale_batch = reply[0][1]
    assert len(stale_batch) == 80
    # B reclaims what A left (idle threshold 0 in the test) and applies everything.
    metrics = AggregatorMetrics()
    b = Aggregator(
        redis,
        AggregatorConfig(block_ms=10, claim_idle_s=0),
        consumer="B",
        metrics=metrics,
        clock=NOW,
    )
    while await b.step():
        pass
    assert await stored(redis, {"alpha"}) == expected(events)
    assert metrics.reclaimed._value.get() == 80
    # A wakes up and applies its stale batch: every entry was acked by B, nothing is re-counted.
    assert await a.apply("alpha", stale_batch) == 0
    assert await stored(redis, {"alpha"}) == expected(events)
    team = await rollup_hash(redis, "alpha", "d", DAY, "team")
    assert team["alpha|cost"] == sum(1_000 + i for i in range(120))
    assert team["alpha|requests"] == 120


async def test_a_batch_read_before_a_store_error_is_applied_when_the_store_is_back(
    redis: Redis,
) -> None:
    # The connection drops between the read and the apply (Redis killed, restarted from its AOF):
    # the batch stays pending to this consumer, which re-reads it first when the store answers,
    # instead of waiting claim_idle_s (60 s here) for a reclaim.
    events = [event(i, cost_nano=100 + i) for i in range(30)]
    await produce(redis, events)
    metrics = AggregatorMetrics()
    a = Aggregator(redis, FAST, consumer="A", metrics=metrics, clock=NOW)
    apply = a._apply
    failures = []

    async def apply_once_unreachable(keys: Sequence[str], args: Sequence[str | int]) -> object:
        if not failures:
            failures.append(keys)
            raise RedisConnectionError("Connection closed by server.")
        return await apply(keys, args)

    a._apply = apply_once_unreachable  # type: ignore[assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    async with asyncio.timeout(10):
        while metrics.events.labels("applied")._value.get() < 30:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert len(failures) == 1
    assert metrics.reclaimed._value.get() == 0
    assert await stored(redis, {"alpha"}) == expected(events)
    assert await backlog(redis, ["alpha"]) == 0


@pytest.mark.parametrize("picked", [list(range(10)), [0, 29]], ids=["a run", "scattered"])
async def test_partly_stale_batch_applies_only_the_rest(redis: Redis, picked: list[int]) -> None:
    events = [event(i, cost_nano=10 + i) for i in range(30)]
    await produce(redis, events)
    a = Aggregator(redis, FAST, consumer="A", clock=NOW)
    await a.refresh_streams()
    stream = rediskeys.events_stream("alpha")
    batch = (await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=30))[0][1]
    # B claims some while A is stalled (a run of the stream, or ids among entries A still
    # holds) and applies them.
    b = Aggregator(redis, FAST, consumer="B", clock=NOW)
    claimed = await redis.xclaim(stream, GROUP, "B", 0, [batch[i][0] for i in picked])
    assert await b.apply("alpha", claimed) == len(picked)
    # A's batch: those were applied by B, the rest by A, none twice.
    assert await a.apply("alpha", batch) == 30 - len(picked)
    assert await stored(redis, {"alpha"}) == expected(events)
    assert await backlog(redis, ["alpha"]) == 0


async def test_a_batch_is_checked_against_every_entry_the_consumer_holds(redis: Redis) -> None:
    # apply.lua lists what the group holds for the consumer between the batch's first and last
    # ids, as many as the batch has; what that listing misses is looked up entry by entry. Here
    # A holds ten entries and applies the first and the last only: the listing (two entries)
    # stops at the second, so the last is found by its own lookup and applied, not called stale.
    events = [event(i, cost_nano=100 + i) for i in range(10)]
    await produce(redis, events)
    a = Aggregator(redis, FAST, consumer="A", clock=NOW)
    await a.refresh_streams()
    stream = rediskeys.events_stream("alpha")
    held = (await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=10))[0][1]
    assert await a.apply("alpha", [held[0], held[9]]) == 2
    assert await stored(redis, {"alpha"}) == expected([events[0], events[9]])
    # The eight between are still A's, pending; applied later, each counts once.
    pending = await redis.xpending_range(stream, GROUP, "-", "+", 20, "A")
    assert [p["message_id"] for p in pending] == [entry_id for entry_id, _ in held[1:9]]
    assert await a.apply("alpha", held[1:9]) == 8
    assert await stored(redis, {"alpha"}) == expected(events)
    assert await backlog(redis, ["alpha"]) == 0


async def test_an_entry_another_consumer_claimed_but_did_not_apply_is_applied_once(
    redis: Redis,
) -> None:
    # B claims two of A's entries and stalls: they are pending, but to B. A's batch still holds
    # them, so A applies them (they are not in A's listing: each is looked up on its own), and
    # B's late apply of them changes nothing.
    events = [event(i, cost_nano=1_000 + i) for i in range(6)]
    await produce(redis, events)
    a = Aggregator(redis, FAST, consumer="A", clock=NOW)
    b = Aggregator(redis, FAST, consumer="B", clock=NOW)
    await a.refresh_streams()
    stream = rediskeys.events_stream("alpha")
    batch = (await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=6))[0][1]
    claimed = await redis.xclaim(stream, GROUP, "B", 0, [batch[2][0], batch[4][0]])
    assert await a.apply("alpha", batch) == 6
    assert await b.apply("alpha", claimed) == 0
    assert await stored(redis, {"alpha"}) == expected(events)
    assert await backlog(redis, ["alpha"]) == 0


async def test_a_batch_of_more_than_a_thousand_entries_is_acked_whole(redis: Redis) -> None:
    # The script acks a thousand ids per XACK (Lua's unpack has a limit): a batch of 1,500
    # leaves nothing pending and counts every event once.
    events = [event(i, cost_nano=7) for i in range(1_500)]
    await produce(redis, events)
    assert await drain(redis, AggregatorConfig(batch_size=1_500, block_ms=10)) == 1_500
    assert await backlog(redis, ["alpha"]) == 0
    team = await rollup_hash(redis, "alpha", "d", DAY, "team")
    assert (team["alpha|requests"], team["alpha|cost"]) == (1_500, 7 * 1_500)


async def test_two_aggregators_at_once_5000_events(redis: Redis) -> None:
    events = random_events(5000, seed=11)
    await produce(redis, events)
    teams = {"alpha", "beta", "gamma"}
    config = AggregatorConfig(batch_size=100, block_ms=10, claim_idle_s=60)
    metrics = [AggregatorMetrics(), AggregatorMetrics()]
    aggregators = [
        Aggregator(redis, config, consumer=f"agg-{i}", metrics=metrics[i], clock=NOW)
        for i in range(2)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(agg.run(stop)) for agg in aggregators]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        known = all(agg.teams for agg in aggregators)
        if known and await backlog(redis, teams) == 0:
            break
    stop.set()
    await asyncio.gather(*tasks)
    assert await backlog(redis, teams) == 0
    applied = [m.events.labels("applied")._value.get() for m in metrics]
    assert sum(applied) == 5000
    assert await stored(redis, teams) == expected(events)


async def test_poison_entries_are_dead_lettered_and_never_block(redis: Redis) -> None:
    good = [event(i) for i in range(5)]
    await produce(redis, good[:2])
    bad_ts = await produce_raw(redis, "alpha", {"event_id": "x", "ts_ms": "soon", "team": "alpha"})
    other = await produce_raw(redis, "alpha", event(99, team="beta").to_fields())
    missing = await produce_raw(redis, "alpha", {"hello": "world"})
    await produce(redis, good[2:])
    metrics = AggregatorMetrics()
    aggregator = Aggregator(redis, FAST, consumer="A", metrics=metrics, clock=NOW)
    while await aggregator.step():
        pass
    assert await stored(redis, {"alpha"}) == expected(good)
    assert await backlog(redis, ["alpha"]) == 0
    dead = await redis.xrange(rediskeys.events_dead_letter("alpha"))
    assert [fields[b"_source_id"].decode() for _, fields in dead] == [bad_ts, other, missing]
    assert dead[0][1][b"ts_ms"] == b"soon"
    assert b"stream of team 'alpha'" in dead[1][1][b"_error"]
    assert dead[2][1][b"hello"] == b"world"
    assert metrics.events.labels("poison")._value.get() == 3
    assert metrics.events.labels("applied")._value.get() == 5


def test_an_entry_reads_the_same_as_a_mapping_or_as_a_raw_reply() -> None:
    # redis-py hands an entry's fields over as a mapping, the pipelined connection as the flat
    # list Redis sent: name, value, name, value...
    fields = {k.encode(): v.encode() for k, v in event(7).to_fields().items()}
    flat = [x for pair in fields.items() for x in pair]
    assert parse_entry("alpha", flat) == parse_entry("alpha", fields) == event(7)
    with pytest.raises(PoisonEntry, match="not a spend event"):
        parse_entry("alpha", flat[:-1])  # a name without its value
    with pytest.raises(PoisonEntry, match="no fields"):
        parse_entry("alpha", [])


async def test_rollup_keys_expire_after_their_bucket(redis: Redis) -> None:
    # T0 is 10:30 on 2026-11-05 and the aggregator's clock an hour later (11:30): the hour
    # bucket closed at 11:00 and the day closes at midnight.
    old_ms = T0_MS - 40 * 86_400_000  # its hour bucket's 35 days are over; its day's are not
    await produce(redis, [event(1), event(2, ts_ms=old_ms)])
    await drain(redis, FAST, clock=NOW)
    hour, old_hour = hour_bucket(T0_MS), hour_bucket(old_ms)
    hourly_ttl = await redis.ttl(rediskeys.rollup("alpha", "h", hour, "team"))
    daily_ttl = await redis.ttl(rediskeys.rollup("alpha", "d", hour[:8], "team"))
    assert hourly_ttl == 35 * 86400 - 30 * 60
    assert daily_ttl == 400 * 86400 + 12 * 3600 + 30 * 60
    # A late event never resurrects a bucket past its life, and keeps the rest it counts in.
    assert not await redis.exists(rediskeys.rollup("alpha", "h", old_hour, "team"))
    old_day = await rollup_hash(redis, "alpha", "d", old_hour[:8], "team")
    assert old_day["alpha|requests"] == 1


async def test_new_team_stream_is_joined_and_metrics_report_lag(redis: Redis) -> None:
    metrics = AggregatorMetrics()
    aggregator = Aggregator(redis, FAST, consumer="A", metrics=metrics, clock=NOW)
    assert await aggregator.step() == 0  # nothing registered yet: sleeps block_ms
    await produce(redis, [event(i, team="delta") for i in range(3)])
    aggregator._next_refresh = 0.0  # the registry is re-read every few seconds; now
    await aggregator.refresh_streams()
    await aggregator.update_stats()
    assert metrics.lag.labels("delta")._value.get() == 3
    assert await aggregator.step() == 3
    await aggregator.update_stats()
    assert metrics.lag.labels("delta")._value.get() == 0
    assert metrics.pending.labels("delta")._value.get() == 0


async def test_blocking_read_wakes_on_new_event(redis: Redis) -> None:
    await produce(redis, [event(0)])
    aggregator = Aggregator(redis, AggregatorConfig(block_ms=5000), consumer="A", clock=NOW)
    assert await aggregator.step() == 1

    async def later() -> None:
        await asyncio.sleep(0.2)
        await produce(redis, [event(1)])

    started = time.monotonic()
    producer = asyncio.create_task(later())
    assert await aggregator.step() == 1
    await producer
    assert time.monotonic() - started < 3


async def test_run_stops_promptly(redis: Redis) -> None:
    await produce(redis, [event(0)])
    stop = asyncio.Event()
    aggregator = Aggregator(redis, AggregatorConfig(block_ms=100), consumer="A", clock=NOW)
    task = asyncio.create_task(aggregator.run(stop))
    async with asyncio.timeout(10):  # applied, then blocked reading an empty stream
        while not (await rollup_hash(redis, "alpha", "d", DAY, "team")).get("alpha|requests"):
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert (await rollup_hash(redis, "alpha", "d", DAY, "team"))["alpha|requests"] == 1


async def test_a_trickle_of_events_is_applied_in_few_batches(redis: Redis) -> None:
    # Each apply has a fixed cost; after a partial batch the running aggregator lingers so
    # events arriving one by one are applied together rather than one apply each.
    config = AggregatorConfig(block_ms=100, linger_ms=1000)
    metrics = AggregatorMetrics()
    aggregator = Aggregator(redis, config, consumer="A", metrics=metrics, clock=NOW)
    await produce(redis, [event(0)])
    stop = asyncio.Event()
    task = asyncio.create_task(aggregator.run(stop))

    async def applied(n: int) -> None:
        while metrics.events.labels("applied")._value.get() < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(applied(1), timeout=10)
    for i in range(1, 21):  # one at a time, each its own XADD, within the linger
        await produce(redis, [event(i)])
    await asyncio.wait_for(applied(21), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert metrics.batches._value.get() <= 3  # 1, then the 20 (split once at worst)
    assert (await rollup_hash(redis, "alpha", "d", DAY, "team"))["alpha|requests"] == 21


@pytest.mark.parametrize("url", ["memory://"])
async def test_embedded_store_runs_the_same_scripts(url: str) -> None:
    redis = await open_store(url)
    try:
        events = random_events(300, seed=3)
        await produce(redis, events)
        a = Aggregator(redis, FAST, consumer="A", clock=NOW)
        await a.refresh_streams()
        stream = rediskeys.events_stream("alpha")
        stale = (await redis.xreadgroup(GROUP, "A", {stream: ">"}, count=20))[0][1]
        await drain(redis, AggregatorConfig(batch_size=64, block_ms=10, claim_idle_s=0))
        assert await a.apply("alpha", stale) == 0
        assert await stored(redis, {"alpha", "beta", "gamma"}) == expected(events)
    finally:
        await close_store(redis)


async def test_events_from_the_settle_script_roll_up_exactly(redis: Redis) -> None:
    from gateway.budgets.ledger import BudgetLedger

    ledger = BudgetLedger(redis)
    events = random_events(60, seed=21)
    for e in events:
        await ledger.settle(None, e.team, e.request_id, (), e)
    await ledger.settle(None, events[0].team, events[0].request_id, (), events[0])  # a retry
    assert await drain(redis, FAST) == 60
    assert await stored(redis, {"alpha", "beta", "gamma"}) == expected(events)


async def test_fine_buckets_for_anomaly_detection_are_applied_with_the_rollups(
    redis: Redis,
) -> None:
    """The same script call writes them: what a request, its cascade escalation, a cache hit, a
    failure, a posted external cost (none: it is not traffic) and an imported FOCUS row (none:
    a day's total) add; lifetimes from the bucket's end on the aggregator's clock, and a bucket
    past its life is not written."""
    from gateway.aggregator.rollups import SeriesSpec
    from gateway.rollupformat import join_parts
    from tests.ledger import external_event

    series = SeriesSpec(bucket_s=300, keep_s=7 * 86400)
    events = [
        event(1, cost_nano=1000, prompt_tokens=100, completion_tokens=20),
        event(2, cost_nano=500),
        event(3, event_id="req-2:1", request_id="req-2", cost_nano=4000, deployment="openai/big"),
        event(4, cache="hit", cost_nano=0, key_id="key_000000000002"),
        event(5, status=502, outcome="error", cost_nano=0, prompt_tokens=0, completion_tokens=0),
        external_event(6, 5_000_000_000),
        event(8, kind="import", units=0, cost_nano=7_000_000_000),
        event(7, ts_ms=T0_MS - 8 * 86_400_000, cost_nano=99),  # older than the buckets kept
    ]
    await produce(redis, events)
    aggregator = Aggregator(redis, FAST, consumer="c", clock=NOW, series=series)
    await aggregator.refresh_streams()
    while await aggregator.step():
        pass
    start = T0_MS // 1000 // 300 * 300
    key = rediskeys.anomaly_series("alpha", 300, start)
    fields = {k.decode(): int(v) for k, v in (await redis.hgetall(key)).items()}
    route = join_parts("gpt-4o", "openai/gpt-4o")
    assert fields == {
        "t||cost": 5500,
        "t||requests": 4,  # the escalation (event 3) is request 2's second call
        "t||hits": 1,
        "t||tokens": 2 * 120,  # requests 1 and 2 (the hit's are not billed, 5 had none)
        "t||extra_cost": 4000,
        "t||errors": 1,
        "k|key_000000000001|cost": 5500,
        "k|key_000000000001|requests": 3,
        "k|key_000000000002|requests": 1,  # a free cache hit: zero sums are not written
        "m|gpt-4o|cost": 5500,
        "m|gpt-4o|requests": 4,
        f"r|{route}|cost": 1500,  # where requests went first: not the escalation's 4000
        f"r|{route}|requests": 4,
    }
    # 10:30 bucket ends 10:35; the clock stands at 11:30: a week from 10:35, less an hour.
    assert await redis.ttl(key) == 7 * 86400 - 55 * 60
    old_start = (T0_MS - 8 * 86_400_000) // 1000 // 300 * 300
    assert not await redis.exists(rediskeys.anomaly_series("alpha", 300, old_start))
    keys = [k async for k in redis.scan_iter(match="sg:*:as:*")]
    assert keys == [key.encode()]
