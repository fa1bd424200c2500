"""The approvals store, on every layout (memory://, a Redis, local://): a repeated ask reuses
the pending approval; an approval holds for its window or its number of requests; a denial
stands; only the current approval can be decided; lists filter by status and team."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.policies.approvals import ApprovalStore, Superseded
from gateway.types import Principal
from tests.clock import FakeClock

ALICE = Principal("key_aaaaaaaaaaaa", "search", project="ranker", environment="dev", name="svc")
BOB = Principal("key_bbbbbbbbbbbb", "support")
DAY_S = 86400.0


async def ask(store: ApprovalStore, who: Principal = ALICE, model: str = "gpt-4o", cost: int = 5):
    return await store.ask(who, model, "big", "n 8 is over 4", cost, pending_ttl_s=DAY_S)


async def test_repeated_asks_reuse_the_pending_approval(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    first = await ask(approvals, cost=5)
    clock.advance(60)
    again = await ask(approvals, cost=9)
    assert first.status == again.status == "pending"
    assert first.new and not again.new and again.id == first.id
    other_model = await ask(approvals, model="o3-mini")
    other_key = await ask(approvals, who=BOB)
    assert len({first.id, other_model.id, other_key.id}) == 3
    (listed,) = [a for a in await approvals.list() if a.id == first.id]
    assert listed.asks == 2 and listed.cost_nano == 9  # the largest estimate asked for
    view = listed.to_dict(int(clock() * 1000))
    assert view["status"] == "pending" and view["key_name"] == "svc"
    assert view["estimated_cost_usd"] == "0.000000009" and view["environment"] == "dev"
    assert view["asked_at"] == "2026-11-05T10:30:00Z"


async def test_concurrent_asks_make_one_approval(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    verdicts = await asyncio.gather(*(ask(approvals) for _ in range(20)))
    assert len({v.id for v in verdicts}) == 1
    assert sum(v.new for v in verdicts) == 1
    assert (await approvals.get(verdicts[0].id)).asks == 20  # type: ignore[union-attr]


async def test_an_approval_counts_its_requests(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    asked = await ask(approvals)
    decided = await approvals.decide(asked.id, "approved", window_s=3600, requests=2, by="ops")
    assert decided is not None and decided.decided_by == "ops"
    assert [(await ask(approvals)).status for _ in range(2)] == ["approved", "approved"]
    used_up = await approvals.get(asked.id)
    assert used_up is not None and used_up.status_at(int(clock() * 1000)) == "expired"
    third = await ask(approvals)  # a new ask, pending again
    assert third.status == "pending" and third.new and third.id != asked.id


async def test_an_approval_lasts_its_window(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    asked = await ask(approvals)
    await approvals.decide(asked.id, "approved", window_s=600)
    clock.advance(599)
    assert (await ask(approvals)).status == "approved"
    assert (await ask(approvals, who=BOB)).status == "pending"  # another principal: not covered
    clock.advance(1)
    later = await ask(approvals)
    assert later.status == "pending" and later.new
    old = await approvals.get(asked.id)
    assert old is not None and old.used == 1
    assert old.to_dict(int(clock() * 1000))["status"] == "expired"


async def test_a_denial_stands_and_supersession_is_refused(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    asked = await ask(approvals)
    denied = await approvals.decide(asked.id, "denied", window_s=DAY_S, note="use the batch API")
    assert denied is not None and denied.note == "use the batch API"
    assert (await ask(approvals)).status == "denied"
    clock.advance(DAY_S)
    fresh = await ask(approvals)
    assert fresh.status == "pending" and fresh.new
    with pytest.raises(Superseded, match=fresh.id):
        await approvals.decide(asked.id, "approved", window_s=60)
    assert await approvals.decide("apr_missing", "approved", window_s=60) is None


async def test_pending_asks_expire(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    asked = await ask(approvals)
    clock.advance(DAY_S)
    expired = await approvals.list(status="expired")
    assert [a.id for a in expired] == [asked.id]
    assert await approvals.list(status="pending") == []
    assert (await ask(approvals)).id != asked.id


async def test_lists_filter_and_old_records_are_dropped(store: Redis, clock: FakeClock) -> None:
    approvals = ApprovalStore(store, clock)
    old = await ask(approvals)
    clock.advance(rediskeys.APPROVAL_RETENTION_S + 1)
    bob = await ask(approvals, who=BOB)
    clock.advance(1)
    alice = await ask(approvals, model="o3-mini")
    assert [a.id for a in await approvals.list()] == [alice.id, bob.id]  # newest first
    assert [a.id for a in await approvals.list(team="support")] == [bob.id]
    assert await approvals.get(old.id) is None
    assert not await store.hexists(rediskeys.approval_current(), f"{ALICE.key_id}|gpt-4o|big")
