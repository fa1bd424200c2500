"""Reserve / settle against both stores: exact admission under concurrency (one client and two
"replicas"), deadlines, period rollover, idempotent settles, threshold alerts, the stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.budgets.ledger import BudgetLedger, BudgetStatus, Reservation
from gateway.budgets.messages import exceeded_error, remaining_headers
from gateway.config.model import BudgetConfig
from gateway.store.connect import close_store, open_store
from gateway.types import MAX_EXACT, SpendEvent
from tests.budgets.support import TEAM, FakeClock, budget, real_db_url

AMOUNT = 1_000_000  # nano-USD reserved per request
K = 7
TTL_S = 900.0


def event(
    clock: FakeClock, n: int | str, cost_nano: int = 0, prompt: int = 0, completion: int = 0
) -> SpendEvent:
    return SpendEvent(
        event_id=f"ev-{n}",
        ts_ms=int(clock() * 1000),
        team=TEAM,
        request_id=f"req-{n}",
        cost_nano=cost_nano,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


async def counter(r: Redis, b: BudgetConfig, period_id: str) -> dict[str, int]:
    raw = await r.hgetall(rediskeys.budget_counter(TEAM, b.name, period_id))
    return {k.decode(): int(v) for k, v in raw.items()}


async def settle_all(
    ledger: BudgetLedger, clock: FakeClock, reservations: list[Reservation], b: BudgetConfig
) -> int:
    """Settle each at a cost a little under what it reserved; return the total charged."""
    total = 0
    for i, res in enumerate(reservations):
        cost = res.amount_nano - 1000 * i
        total += cost
        result = await ledger.settle(
            res, TEAM, res.request_id, [b], event(clock, res.request_id, cost)
        )
        assert not result.duplicate and result.released
    return total


async def test_exactly_k_of_300_concurrent_reserves(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_nano=K * AMOUNT, thresholds=())
    ledger = BudgetLedger(store, clock=clock)
    results = await asyncio.gather(
        *(ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 10, TTL_S) for i in range(300))
    )
    admitted = [r for r in results if r.ok]
    assert len(admitted) == K
    refused = [r for r in results if not r.ok]
    assert all(r.exceeded == b and r.retry_after_s for r in refused)
    pid = admitted[0].period_ids[0]
    assert await counter(store, b, pid) == {"reserved_nano": K * AMOUNT, "reserved_tokens": K * 10}

    total = await settle_all(ledger, clock, admitted, b)
    state = await counter(store, b, pid)
    assert state["spent_nano"] == total <= b.limit_nano  # type: ignore[operator]
    assert state["reserved_nano"] == 0 and state["reserved_tokens"] == 0
    assert await store.zcard(rediskeys.reservation_deadlines(TEAM)) == 0
    assert await store.xlen(rediskeys.events_stream(TEAM)) == K


async def test_two_replicas_admit_exactly_k(
    real_store: Redis, real_redis_url: str, clock: FakeClock
) -> None:
    # A second client with its own connection pool: what a second gateway process is.
    other = await open_store(real_db_url(real_redis_url))
    try:
        b = budget(limit_nano=K * AMOUNT)
        replicas = [BudgetLedger(real_store, clock=clock), BudgetLedger(other, clock=clock)]
        results = await asyncio.gather(
            *(replicas[i % 2].reserve(TEAM, f"r{i}", [b], AMOUNT, 0, TTL_S) for i in range(300))
        )
        admitted = [r for r in results if r.ok]
        assert len(admitted) == K
        for i, res in enumerate(admitted):
            cost = AMOUNT - 1000 * i
            await replicas[i % 2].settle(res, TEAM, res.request_id, [b], event(clock, i, cost))
        state = await counter(real_store, b, admitted[0].period_ids[0])
        assert state["spent_nano"] <= K * AMOUNT
        assert state["reserved_nano"] == 0
    finally:
        await close_store(other)


async def test_token_budget_admits_exactly_k(store: Redis, clock: FakeClock) -> None:
    # USD is generous here: the token limit is the binding one.
    b = budget("tokens", period="daily", limit_tokens=5 * 300, limit_nano=10**12)
    ledger = BudgetLedger(store, clock=clock)
    results = await asyncio.gather(
        *(ledger.reserve(TEAM, f"r{i}", [b], 10, 300, TTL_S) for i in range(300))
    )
    admitted = [r for r in results if r.ok]
    assert len(admitted) == 5
    assert admitted[0].remaining_tokens is not None
    for i, res in enumerate(admitted):
        ev = event(clock, i, cost_nano=10, prompt=100, completion=150 + i)
        await ledger.settle(res, TEAM, res.request_id, [b], ev)
    state = await counter(store, b, admitted[0].period_ids[0])
    assert state["spent_tokens"] == 5 * 250 + sum(range(5)) <= 5 * 300
    assert state["reserved_tokens"] == 0 and state["reserved_nano"] == 0


async def test_all_or_nothing_across_budgets(store: Redis, clock: FakeClock) -> None:
    team = budget("team", limit_nano=100 * AMOUNT)
    project = budget("project", scope="project", match="search", limit_nano=2 * AMOUNT)
    soft = budget("soft", period="daily", limit_nano=AMOUNT, on_exceed="alert")
    ledger = BudgetLedger(store, clock=clock)
    first = await ledger.reserve(TEAM, "r1", [team, project, soft], AMOUNT, 0, TTL_S)
    assert first.ok and first.soft_exceeded == ()
    assert first.remaining_nano == 0  # the soft budget is the tightest: fully held
    second = await ledger.reserve(TEAM, "r2", [team, project, soft], AMOUNT, 0, TTL_S)
    assert second.ok and second.soft_exceeded == (soft,)  # soft budgets never refuse
    third = await ledger.reserve(TEAM, "r3", [team, project, soft], AMOUNT, 0, TTL_S)
    assert not third.ok and third.exceeded == project
    status = third.exceeded_status
    assert status is not None and status.reserved_nano == 2 * AMOUNT
    # Refused: nothing was held anywhere, not even on the budgets that had room.
    assert (await counter(store, team, first.period_ids[0]))["reserved_nano"] == 2 * AMOUNT
    assert (await counter(store, soft, first.period_ids[2]))["reserved_nano"] == 2 * AMOUNT


async def test_block_is_reported_before_downgrade(store: Redis, clock: FakeClock) -> None:
    down = budget("down", limit_nano=AMOUNT, on_exceed="downgrade", downgrade_to="mini")
    block = budget("block", period="weekly", limit_nano=AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    only_down = await ledger.reserve(TEAM, "r1", [down], 2 * AMOUNT, 0, TTL_S)
    assert only_down.exceeded == down
    both = await ledger.reserve(TEAM, "r2", [down, block], 2 * AMOUNT, 0, TTL_S)
    assert both.exceeded == block

    # Downgraded, the request is reserved again for the cheaper model: the downgrade budget now
    # only counts it, the block budget still holds.
    cheaper = await ledger.reserve(
        TEAM, "r1", [down, block], AMOUNT // 2, 0, TTL_S, enforce_downgrade=False
    )
    assert cheaper.ok
    again = await ledger.reserve(TEAM, "r3", [down], AMOUNT, 0, TTL_S, enforce_downgrade=False)
    assert again.ok and again.status[0].reserved_nano == AMOUNT // 2 + AMOUNT
    assert again.remaining_nano == 0  # never negative in the header
    over = await ledger.reserve(
        TEAM, "r4", [down, block], AMOUNT, 0, TTL_S, enforce_downgrade=False
    )
    assert over.exceeded == block


async def test_retried_reserve_of_the_same_request_holds_once(
    store: Redis, clock: FakeClock
) -> None:
    b = budget(limit_nano=10 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    first = await ledger.reserve(TEAM, "r1", [b], AMOUNT, 0, TTL_S)
    again = await ledger.reserve(TEAM, "r1", [b], AMOUNT, 0, TTL_S)
    assert first.ok and again.ok
    assert (await counter(store, b, first.period_ids[0]))["reserved_nano"] == AMOUNT


async def test_expired_reservation_is_released_once(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_nano=3 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    crashed = await ledger.reserve(TEAM, "crashed", [b], 2 * AMOUNT, 5, 60.0)
    assert crashed.ok
    assert not (await ledger.reserve(TEAM, "blocked", [b], 2 * AMOUNT, 5, 60.0)).ok
    clock.advance(61)
    fresh = await ledger.reserve(TEAM, "fresh", [b], 2 * AMOUNT, 5, 60.0)
    assert fresh.ok and fresh.released_expired == 1
    pid = crashed.period_ids[0]
    assert await counter(store, b, pid) == {"reserved_nano": 2 * AMOUNT, "reserved_tokens": 5}

    # The "crashed" replica was only slow: its settle still counts, once, and gives back
    # nothing more (its reservation is gone already).
    late = await ledger.settle(crashed, TEAM, "crashed", [b], event(clock, "late", AMOUNT))
    assert not late.duplicate and not late.released
    state = await counter(store, b, pid)
    assert state["spent_nano"] == AMOUNT and state["reserved_nano"] == 2 * AMOUNT
    await ledger.settle(fresh, TEAM, "fresh", [b], event(clock, "fresh", AMOUNT))
    state = await counter(store, b, pid)
    assert state["spent_nano"] == 2 * AMOUNT and state["reserved_nano"] == 0
    assert await store.zcard(rediskeys.reservation_deadlines(TEAM)) == 0


async def test_release_expired_without_reserving(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_nano=3 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    for i in range(3):
        await ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 0, 10.0)
    assert await ledger.release_expired(TEAM) == 0
    clock.advance(11)
    assert await ledger.release_expired(TEAM) == 3
    (status,) = await ledger.budget_status(TEAM, [b])
    assert status.reserved_nano == 0 and status.remaining_nano == 3 * AMOUNT


async def test_period_rollover(store: Redis, clock: FakeClock) -> None:
    monthly = budget("monthly", limit_nano=10 * AMOUNT)
    daily = budget("daily", period="daily", limit_nano=10 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    clock.set(datetime(2031, 1, 31, 23, 59, 59, tzinfo=UTC))
    res = await ledger.reserve(TEAM, "r1", [monthly, daily], 2 * AMOUNT, 0, TTL_S)
    assert res.period_ids == ("m203101", "d20310131")
    assert res.retry_after_s is None and res.ok

    clock.advance(2)  # 2031-02-01T00:00:01Z
    result = await ledger.settle(res, TEAM, "r1", [monthly, daily], event(clock, 1, AMOUNT))
    assert [s.period_id for s in result.status] == ["m203101", "d20310131"]
    for b, pid in ((monthly, "m203101"), (daily, "d20310131")):
        assert await counter(store, b, pid) == {"spent_nano": AMOUNT, "reserved_nano": 0}

    after = await ledger.reserve(TEAM, "r2", [monthly, daily], 2 * AMOUNT, 0, TTL_S)
    assert after.period_ids == ("m203102", "d20310201")
    assert [s.spent_nano for s in after.status] == [0, 0]
    statuses = await ledger.budget_status(TEAM, [monthly, daily])
    assert [s.period_id for s in statuses] == ["m203102", "d20310201"]
    # Old periods' counters expire by themselves, some time after their period ended.
    ttl_ms = await store.pttl(rediskeys.budget_counter(TEAM, "daily", "d20310131"))
    assert 0 < ttl_ms <= (rediskeys.BUDGET_COUNTER_RETENTION_S + 86400) * 1000


async def test_settle_without_reservation_uses_the_events_period(
    store: Redis, clock: FakeClock
) -> None:
    b = budget(limit_nano=10 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    clock.set(datetime(2031, 4, 30, 23, 0, tzinfo=UTC))
    ev = event(clock, 1, AMOUNT)
    clock.set(datetime(2031, 5, 2, tzinfo=UTC))  # a spool replay, days later
    result = await ledger.settle(None, TEAM, "req-1", [b], ev)
    assert [s.period_id for s in result.status] == ["m203104"]
    assert (await counter(store, b, "m203104"))["spent_nano"] == AMOUNT


async def test_settle_is_idempotent_by_event_id(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_nano=10 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    res = await ledger.reserve(TEAM, "r1", [b], 2 * AMOUNT, 0, TTL_S)
    ev = event(clock, 1, AMOUNT)
    first, second = [await ledger.settle(res, TEAM, "r1", [b], ev) for _ in range(2)]
    assert not first.duplicate and first.spent_nano == {b.name: AMOUNT}
    assert second.duplicate and second.status == ()
    state = await counter(store, b, res.period_ids[0])
    assert state["spent_nano"] == AMOUNT and state["reserved_nano"] == 0
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 1
    # A retried settle after the reservation is gone (and with no reservation at all) too.
    assert (await ledger.settle(None, TEAM, "r1", [b], ev)).duplicate


async def test_thresholds_fire_once_per_period_under_concurrency(
    store: Redis, clock: FakeClock
) -> None:
    b = budget(limit_nano=100_000, thresholds=(50, 75, 90, 100))
    ledger = BudgetLedger(store, clock=clock)
    results = await asyncio.gather(
        *(ledger.settle(None, TEAM, f"r{i}", [b], event(clock, i, 1000)) for i in range(200))
    )
    crossed = sorted(c for r in results for c in r.crossed)
    assert crossed == sorted([(b, 50), (b, 75), (b, 90), (b, 100)])
    # Each threshold went to the settle that reached it (serialized in Redis).
    for result in results:
        for _, pct in result.crossed:
            assert result.status[0].spent_nano * 100 >= pct * 100_000
    clock.set(datetime(2031, 4, 2, tzinfo=UTC))  # next month: alerts again
    again = await ledger.settle(None, TEAM, "next", [b], event(clock, "next", 60_000))
    assert again.crossed == ((b, 50),)


async def test_a_burst_of_first_settles_registers_the_team_once(
    store: Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = budget(limit_nano=10**12)
    ledger = BudgetLedger(store, clock=clock)
    adds: list[tuple[object, ...]] = []
    original = store.sadd

    async def counted(*args: object) -> object:
        adds.append(args)
        return await original(*args)

    monkeypatch.setattr(store, "sadd", counted)
    await asyncio.gather(
        *(ledger.settle(None, TEAM, f"r{i}", [b], event(clock, i, 1000)) for i in range(50))
    )
    assert adds == [(rediskeys.streams_registry(), TEAM)]
    assert await store.smembers(rediskeys.streams_registry()) == {TEAM.encode()}
    await ledger.settle(None, TEAM, "later", [b], event(clock, "later", 1000))
    assert len(adds) == 1  # registered: no more SADDs


async def test_token_thresholds(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_tokens=1000, thresholds=(50, 100))
    ledger = BudgetLedger(store, clock=clock)
    result = await ledger.settle(
        None, TEAM, "r", [b], event(clock, 1, 5, prompt=300, completion=300)
    )
    assert result.crossed == ((b, 50),)
    assert result.status[0].pct == 60.0


async def test_stream_entries_parse_back(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_nano=10 * AMOUNT)
    ledger = BudgetLedger(store, clock=clock)
    ev = SpendEvent(
        event_id="ev-rich",
        ts_ms=int(clock() * 1000),
        team=TEAM,
        request_id="req-rich",
        key_id="key_0123456789ab",
        project="search",
        environment="prod",
        workload="batch",
        tags=MappingProxyType({"exp": "a1", "cost-center": "42"}),
        endpoint="chat.completions",
        requested_model="gpt-4o",
        served_model="gpt-4o-mini",
        provider="openai",
        deployment="openai/gpt-4o-mini",
        prompt_tokens=1200,
        cached_prompt_tokens=1000,
        completion_tokens=80,
        reasoning_tokens=10,
        tokens_estimated=True,
        cost_nano=123_456,
        list_cost_nano=999_999,
        optimization="tiering",
        cache="miss",
        route="auto:long-prompt",
        latency_ms=812.25,
        status=200,
        outcome="client_disconnected",
        revenue_nano=5_000_000,
    )
    res = await ledger.reserve(TEAM, "req-rich", [b], AMOUNT, 2000, TTL_S)
    result = await ledger.settle(res, TEAM, "req-rich", [b], ev)
    entries = await store.xrange(rediskeys.events_stream(TEAM))
    assert [entry_id.decode() for entry_id, _ in entries] == [result.stream_id]
    assert SpendEvent.from_fields(entries[0][1]) == ev
    assert await store.smembers(rediskeys.streams_registry()) == {TEAM.encode()}


async def test_no_budgets_still_records_the_event(store: Redis, clock: FakeClock) -> None:
    ledger = BudgetLedger(store, clock=clock)
    res = await ledger.reserve(TEAM, "r1", [], AMOUNT, 100, TTL_S)
    assert res.ok and res.remaining_nano is None and remaining_headers(res) == {}
    assert await store.dbsize() == 0  # no Redis call at all
    result = await ledger.settle(res, TEAM, "r1", [], event(clock, 1, AMOUNT))
    assert not result.duplicate and result.status == () and result.crossed == ()
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 1
    assert (await ledger.settle(res, TEAM, "r1", [], event(clock, 1, AMOUNT))).duplicate


async def test_amounts_are_exact_to_2_pow_53(store: Redis, clock: FakeClock) -> None:
    big = MAX_EXACT - 1
    b = budget(period="total", limit_nano=big)
    ledger = BudgetLedger(store, clock=clock)
    res = await ledger.reserve(TEAM, "r1", [b], big, 0, TTL_S)
    assert res.ok and res.remaining_nano == 0
    result = await ledger.settle(res, TEAM, "r1", [b], event(clock, 1, big - 7))
    assert result.spent_nano == {b.name: big - 7}
    assert (await counter(store, b, "total"))["spent_nano"] == big - 7
    assert await store.pttl(rediskeys.budget_counter(TEAM, b.name, "total")) == -1
    with pytest.raises(ValueError, match="2\\^53"):
        await ledger.reserve(TEAM, "r2", [b], MAX_EXACT, 0, TTL_S)
    with pytest.raises(ValueError, match="settled as"):
        await ledger.settle(res, TEAM, "another-request", [b], event(clock, 2, 1))
    with pytest.raises(ValueError, match="belongs to team"):
        await ledger.reserve(TEAM, "r3", [budget(team="beta", limit_nano=1)], 1, 0, TTL_S)


async def test_exceeded_error_and_headers(store: Redis, clock: FakeClock) -> None:
    clock.set(datetime(2031, 3, 31, 23, 0, tzinfo=UTC))
    monthly = budget("alpha-monthly", limit_nano=1_500_000_000, limit_tokens=1_000_000)
    ledger = BudgetLedger(store, clock=clock)
    held = await ledger.reserve(TEAM, "r1", [monthly], 1_000_000_000, 10, TTL_S)
    assert remaining_headers(held) == {
        "x-sg-budget-remaining-usd": "0.500000000",
        "x-sg-budget-remaining-tokens": "999990",
    }
    refused = await ledger.reserve(TEAM, "r2", [monthly], 600_000_000, 10, TTL_S)
    assert not refused.ok and refused.retry_after_s == 3600
    error = exceeded_error(refused)
    assert error.status == 429 and error.code == "budget_exceeded"
    assert error.headers == {"Retry-After": "3600"}
    assert error.message == (
        "Budget 'alpha-monthly' (team alpha) is exhausted: limit $1.50 and 1,000,000 tokens per "
        "month; $0.00 spent + $1.00 held by requests in flight; this request needs up to $0.60; "
        "0 tokens spent + 10 held; this request needs up to 10. It resets at "
        "2031-04-01T00:00:00Z (in 3600 s)."
    )

    forever = budget("lifetime", scope="project", match="search", period="total", limit_nano=1)
    refused = await ledger.reserve(TEAM, "r3", [forever], 2, 0, TTL_S)
    error = exceeded_error(refused)
    assert error.headers == {} and refused.retry_after_s is None
    assert "project search of team alpha" in error.message
    assert "does not reset" in error.message
    with pytest.raises(ValueError):
        exceeded_error(held)


@pytest.mark.parametrize(
    ("limit_nano", "limit_tokens", "spent_nano", "spent_tokens", "pct"),
    [
        (1000, None, 250, 999, 25.0),  # USD only: tokens spent do not count
        (None, 200, 999, 50, 25.0),  # tokens only
        (1000, 200, 250, 150, 75.0),  # both: the higher
        (1000, 200, 900, 20, 90.0),
        (None, None, 5, 5, 0.0),  # no limit (not configurable, but safe)
        (0, None, 1, 0, 100.0),  # a zero limit spent is full
        (0, None, 0, 0, 0.0),
    ],
)
def test_a_budgets_used_percent_is_the_higher_of_its_limits(
    limit_nano: int | None, limit_tokens: int | None, spent_nano: int, spent_tokens: int, pct: float
) -> None:
    limits = BudgetConfig("b", TEAM, "team", None, "monthly", limit_nano, limit_tokens)
    status = BudgetStatus(limits, "m202611", None, spent_nano, 0, spent_tokens, 0)
    assert status.pct == pct
