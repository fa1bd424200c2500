"""Budget leases (budgets/leases.py) against both stores: one Redis reservation serves many
requests far from the limit, every request reserves in Redis near it, nothing is ever
overspent or left held, and a lease whose settle failed stays held until its deadline."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway import rediskeys
from gateway.budgets.leases import MIN_REQUESTS
from gateway.budgets.ledger import BudgetLedger, Reservation
from gateway.config.model import BudgetConfig
from gateway.store.connect import close_store, open_store
from tests.budgets.support import TEAM, FakeClock, budget, real_db_url
from tests.budgets.test_budget_ledger import AMOUNT, TTL_S, counter, event

FRACTION = 0.01  # a lease is 1/100 of what is left
FAR = int(MIN_REQUESTS / FRACTION) * AMOUNT  # the least left at which a lease is granted


def leasing(store: Redis, clock: FakeClock) -> BudgetLedger:
    return BudgetLedger(store, clock=clock, lease_fraction=FRACTION, lease_window_s=30)


async def settle(ledger: BudgetLedger, clock: FakeClock, res: Reservation, cost: int) -> None:
    result = await ledger.settle(
        res, TEAM, res.request_id, res.budgets, event(clock, res.request_id, cost)
    )
    assert not result.duplicate


async def test_far_from_the_limit_one_lease_holds_many_requests(
    store: Redis, clock: FakeClock
) -> None:
    b = budget(limit_nano=10_000 * FAR)
    ledger = leasing(store, clock)
    first = await ledger.reserve(TEAM, "r0", [b], AMOUNT, 10, TTL_S)
    assert first.ok and first.lease is None  # nothing known yet: reserved in Redis
    leased = await asyncio.gather(
        *(ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 10, TTL_S) for i in range(1, 41))
    )
    lease = leased[0].lease
    assert lease is not None and all(r.ok and r.lease is lease for r in leased)
    assert lease.nano == (b.limit_nano - AMOUNT) // 100  # type: ignore[operator]
    assert lease.tokens is None  # no token limit: not leased, not limited here
    pid = first.period_ids[0]
    # Redis holds the first request and the lease, nothing per leased request.
    assert (await counter(store, b, pid))["reserved_nano"] == AMOUNT + lease.nano
    assert await store.zcard(rediskeys.reservation_deadlines(TEAM)) == 2

    costs = [AMOUNT - 1000 * i for i in range(41)]
    for res, cost in zip([first, *leased], costs, strict=True):
        await settle(ledger, clock, res, cost)
    state = await counter(store, b, pid)
    assert state["spent_nano"] == sum(costs)
    assert state["reserved_nano"] == lease.nano  # the lease, until it is given back

    # This process sees what Redis would show without its lease (as of the grant, plus what
    # went through the lease since): here, one process, exactly what is left.
    more = await ledger.reserve(TEAM, "r41", [b], AMOUNT, 10, TTL_S)
    assert more.lease is lease
    assert more.remaining_nano == b.limit_nano - sum(costs) - AMOUNT  # type: ignore[operator]
    await settle(ledger, clock, more, AMOUNT)

    await ledger.close_leases()
    state = await counter(store, b, pid)
    assert state["spent_nano"] == sum(costs) + AMOUNT and state["reserved_nano"] == 0
    assert await store.zcard(rediskeys.reservation_deadlines(TEAM)) == 0
    assert await store.xlen(rediskeys.events_stream(TEAM)) == 42


async def test_near_the_limit_every_request_reserves_in_redis(
    store: Redis, clock: FakeClock
) -> None:
    k = FAR // AMOUNT - 1  # one request short of leasing territory
    b = budget(limit_nano=k * AMOUNT, thresholds=())
    ledger = leasing(store, clock)
    results = await asyncio.gather(
        *(ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 0, TTL_S) for i in range(k + 300))
    )
    admitted = [r for r in results if r.ok]
    assert len(admitted) == k and all(r.lease is None for r in results)
    pid = admitted[0].period_ids[0]
    assert (await counter(store, b, pid))["reserved_nano"] == k * AMOUNT


async def test_leases_never_overspend_into_the_limit(store: Redis, clock: FakeClock) -> None:
    """From leasing territory down to the last request, sequentially, each costing its worst
    case: every request that fits is served, spend ends exactly at the limit, nothing held."""
    n = FAR // AMOUNT + 200
    b = budget(limit_nano=n * AMOUNT, thresholds=())
    ledger = leasing(store, clock)
    served, leased = 0, 0
    for i in range(n + 5):
        res = await ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 0, TTL_S)
        if not res.ok:
            break
        served += 1
        leased += res.lease is not None
        await settle(ledger, clock, res, AMOUNT)
    await ledger.close_leases()
    assert leased > 0
    assert served == n
    state = await counter(store, b, res.period_ids[0])
    assert state["spent_nano"] == n * AMOUNT == b.limit_nano
    assert state["reserved_nano"] == 0


async def test_concurrent_burst_through_leases_stays_under_the_limit(
    store: Redis, clock: FakeClock
) -> None:
    n = FAR // AMOUNT + 400
    b = budget(limit_nano=n * AMOUNT, thresholds=())
    ledger = leasing(store, clock)
    warm = await ledger.reserve(TEAM, "warm", [b], AMOUNT, 0, TTL_S)
    await settle(ledger, clock, warm, AMOUNT)
    results = await asyncio.gather(
        *(ledger.reserve(TEAM, f"r{i}", [b], AMOUNT, 0, TTL_S) for i in range(n + 100))
    )
    admitted = [r for r in results if r.ok]
    assert any(r.lease is not None for r in admitted)
    assert any(r.lease is None for r in admitted)
    # Worst cases held never exceed what was left: Redis refused whatever did not fit.
    assert (len(admitted) + 1) * AMOUNT <= n * AMOUNT
    for res in admitted:
        await settle(ledger, clock, res, AMOUNT)
    await ledger.close_leases()
    state = await counter(store, b, warm.period_ids[0])
    assert state["spent_nano"] == (len(admitted) + 1) * AMOUNT
    assert state["reserved_nano"] == 0
    assert await store.zcard(rediskeys.reservation_deadlines(TEAM)) == 0


async def test_token_budgets_are_leased_too(store: Redis, clock: FakeClock) -> None:
    b = budget(limit_tokens=10_000 * MIN_REQUESTS * 100 * 50)
    ledger = leasing(store, clock)
    await ledger.reserve(TEAM, "r0", [b], 0, 50, TTL_S)
    res = await ledger.reserve(TEAM, "r1", [b], 0, 50, TTL_S)
    assert res.lease is not None and res.lease.nano is None
    assert res.lease.tokens == (b.limit_tokens - 50) // 100  # type: ignore[operator]


async def test_a_failed_settle_leaves_the_lease_to_its_deadline(
    store: Redis, clock: FakeClock
) -> None:
    b = budget(limit_nano=10_000 * FAR)
    ledger = leasing(store, clock)
    await ledger.reserve(TEAM, "r0", [b], AMOUNT, 0, TTL_S)
    res = await ledger.reserve(TEAM, "r1", [b], AMOUNT, 0, TTL_S)
    lease = res.lease
    assert lease is not None
    # The stream key of the wrong type: the settle script fails in its slot (what the
    # accountant then spools), and the lease may not be given back before the spool replays.
    await store.set(rediskeys.events_stream(TEAM), "not a stream")
    item = (res, TEAM, "r1", [b], event(clock, "r1", AMOUNT))
    try:  # an error in its slot (Redis), or for the whole batch (the embedded store)
        [outcome] = await ledger.settle_many([item])
    except ResponseError as exc:
        outcome = exc
    assert isinstance(outcome, ResponseError)
    await ledger.close_leases()
    assert lease.closed and not lease.released
    held = await store.hgetall(rediskeys.reservation(TEAM, lease.lease_id))
    assert held  # still held; the deadline sweep releases it
    deadline = await store.zscore(rediskeys.reservation_deadlines(TEAM), lease.lease_id)
    assert deadline == lease.deadline_ms


async def test_two_replicas_lease_separately_and_settle_exactly(
    real_store: Redis, real_redis_url: str, clock: FakeClock
) -> None:
    other = await open_store(real_db_url(real_redis_url))
    try:
        b = budget(limit_nano=10_000 * FAR)
        replicas = [leasing(real_store, clock), leasing(other, clock)]
        for i, replica in enumerate(replicas):
            await replica.reserve(TEAM, f"warm{i}", [b], AMOUNT, 0, TTL_S)
        results = await asyncio.gather(
            *(replicas[i % 2].reserve(TEAM, f"r{i}", [b], AMOUNT, 0, TTL_S) for i in range(200))
        )
        leases = {id(r.lease) for r in results if r.lease is not None}
        assert len(leases) == 2  # one per replica
        total = 0
        for i, res in enumerate(results):
            cost = AMOUNT - 7 * i
            total += cost
            await settle(replicas[i % 2], clock, res, cost)
        for replica in replicas:
            await replica.close_leases()
        state = await counter(real_store, b, results[0].period_ids[0])
        # The two warm-up reservations are still held (never settled); leases are not.
        assert state["spent_nano"] == total
        assert state["reserved_nano"] == 2 * AMOUNT
    finally:
        await close_store(other)


async def test_reconfiguring_closes_the_leases(store: Redis, clock: FakeClock) -> None:
    b: BudgetConfig = budget(limit_nano=10_000 * FAR)
    ledger = leasing(store, clock)
    await ledger.reserve(TEAM, "r0", [b], AMOUNT, 0, TTL_S)
    res = await ledger.reserve(TEAM, "r1", [b], AMOUNT, 0, TTL_S)
    assert res.lease is not None
    ledger.configure_leases(0.0, 30)
    after = await ledger.reserve(TEAM, "r2", [b], AMOUNT, 0, TTL_S)
    assert after.lease is None and res.lease.closed
    await settle(ledger, clock, res, AMOUNT)  # its last request settles: it is given back
    await ledger.close_leases()
    state = await counter(store, b, res.period_ids[0])
    assert state["reserved_nano"] == 2 * AMOUNT  # r0 and r2, in Redis
