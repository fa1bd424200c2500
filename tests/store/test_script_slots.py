"""Every Lua script touches one Redis Cluster slot: a script whose keys hash to two slots is
refused by a cluster (CROSSSLOT). Checked without a server, on the KEYS lists the code passes
each script, built by the code that builds them (the ledger, the aggregator) or from the same
`rediskeys` names the caller uses, for teams whose names stress the hash tag. Keys a script
reaches that are not in its KEYS (the budget counters a reservation hash names) are the
reservation's team's: `ledger._check_team` refuses anything else.

A new script fails `test_every_script_is_checked` until it has a case here. The MULTI blocks
(`pipeline(transaction=True)`), which a cluster also refuses across slots, are checked the same
way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import gateway
from gateway import rediskeys
from gateway.aggregator.consumer import Aggregator
from gateway.aggregator.rollups import RollupBatch, SeriesSpec
from gateway.budgets.ledger import BudgetLedger
from gateway.cache.key import cache_key
from gateway.cache.store import CachedResponse, ResponseCache
from gateway.config.model import AggregatorConfig
from gateway.store.cluster import slot_of
from gateway.store.connect import close_store, open_store
from tests.budgets.support import FakeClock, budget
from tests.ledger import event

TEAMS = ["alpha", "beta", "team-42", "a:b", "x}y", "{odd}", "ünï", "t" * 200]
BUDGET_NAMES = ["monthly", "daily-{tag}", "key:abc"]
PERIODS = {"monthly": "m203103", "daily-{tag}": "d20310314", "key:abc": "total"}

KeysOf = Callable[[str], list[list[str]]]


async def _reserve_keys(team: str) -> list[list[str]]:
    budgets = [budget(name, team=team) for name in BUDGET_NAMES]
    periods = [PERIODS[name] for name in BUDGET_NAMES]
    return [
        BudgetLedger._reserve_keys(team, "req-1", budgets, periods),
        BudgetLedger._reserve_keys(team, "lease.host-1.7", budgets, periods),  # a lease
        BudgetLedger._reserve_keys(team, "", budgets[:0], []),  # release_expired
    ]


async def _settle_keys(team: str) -> list[list[str]]:
    redis = await open_store("memory://")
    try:
        ledger = BudgetLedger(redis, clock=FakeClock())
        budgets = [budget(name, team=team) for name in BUDGET_NAMES]
        periods = [PERIODS[name] for name in BUDGET_NAMES]
        call = ledger._settle_call(team, "req-1", budgets, periods, event(1, team=team))
        return [call.keys]
    finally:
        await close_store(redis)


async def _apply_keys(team: str) -> list[list[str]]:
    redis = await open_store("memory://")
    try:
        aggregator = Aggregator(redis, AggregatorConfig(), clock=FakeClock())
        batch = RollupBatch(None, SeriesSpec(bucket_s=300, keep_s=86400))
        events = [
            event(n, team=team, project=f"p{n}", key_id=f"key_{n:012d}", tags={"exp": f"e{n}"})
            for n in range(5)
        ]
        for e in events:
            batch.add(e)
        good = [(f"{n}-0", e) for n, e in enumerate(events)]
        keys, _ = aggregator._script_args(team, batch, good, [("9-0", "poison")])
        assert len(keys) > 10, "every dimension's rollups, and the anomaly series"
        return [keys]
    finally:
        await close_store(redis)


async def _import_keys(team: str) -> list[list[str]]:
    # history/imports.py: the (team, day) id set and the team's stream.
    return [[rediskeys.imported_events(team, "20310314"), rediskeys.events_stream(team)]]


async def _external_cost_keys(team: str) -> list[list[str]]:
    # reports/external_costs.py: the id's marker and the team's stream.
    return [[rediskeys.external_cost_marker(team, "inv-1"), rediskeys.events_stream(team)]]


async def _one_key(team: str) -> list[list[str]]:
    # lease.lua: one lease key (archive lock, anomaly detector); prune_consumer.lua: a stream.
    return [
        [rediskeys.archive_lock(team)],
        [rediskeys.anomaly_lease()],
        [rediskeys.events_stream(team)],
    ]


async def _rate_keys(team: str) -> list[list[str]]:
    # ratelimits/limiter.py: one window's count per call.
    return [[rediskeys.rate_count("per-team", team, "tokens", 29_000_000)]]


async def _approval_keys(team: str) -> list[list[str]]:
    # policies/approvals.py: ask (records, current, index), decide (records, current).
    records, current = rediskeys.approval_records(), rediskeys.approval_current()
    return [[records, current, rediskeys.approval_index()], [records, current]]


async def _cache_put_keys(team: str) -> list[list[str]]:
    # cache/store.py: the entry, its shard's index and sizes, for a key of every shard.
    redis = await open_store("memory://")
    calls: list[list[str]] = []

    class Capture:
        def evalsha(self, script: object, keys: list[str], args: object, later: bool) -> None:
            calls.append(list(keys))

    try:
        cache = ResponseCache(redis, 0)
        for shard in "0123456789abcdef":
            key = f"{cache_key('chat', {'model': 'm'}, f't:{team}')[:-1]}{shard}"
            cache._store(Capture(), key, CachedResponse(b"{}"), 60.0, 60.0)  # type: ignore[arg-type]
        return calls
    finally:
        await close_store(redis)


CASES = {
    "budgets/lua/reserve.lua": _reserve_keys,
    "budgets/lua/settle.lua": _settle_keys,
    "aggregator/lua/apply.lua": _apply_keys,
    "aggregator/lua/lease.lua": _one_key,
    "aggregator/lua/prune_consumer.lua": _one_key,
    "history/lua/import.lua": _import_keys,
    "reports/lua/post_external_cost.lua": _external_cost_keys,
    "ratelimits/lua/take.lua": _rate_keys,
    "policies/lua/ask.lua": _approval_keys,
    "policies/lua/decide.lua": _approval_keys,
    "cache/lua/put.lua": _cache_put_keys,
}


def test_every_script_is_checked() -> None:
    root = Path(gateway.__file__).parent
    scripts = {str(p.relative_to(root)) for p in root.rglob("*.lua")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
@pytest.mark.parametrize("team", TEAMS)
async def test_script_keys_share_one_slot(script: str, team: str) -> None:
    for keys in await CASES[script](team):
        slots = {slot_of(k) for k in keys}
        assert len(slots) == 1, f"{script} for team {team!r}: keys in slots {slots}: {keys}"


async def test_teams_spread_over_slots() -> None:
    # The hash tag is the team's, not a constant: teams land on different slots (nodes).
    slots = {slot_of(rediskeys.events_stream(f"team-{n}")) for n in range(50)}
    assert len(slots) > 40


async def test_cache_shards_spread_over_slots() -> None:
    keys = await _cache_put_keys("alpha")
    assert len({slot_of(k[0]) for k in keys}) == rediskeys.CACHE_SHARDS


# MULTI blocks (pipeline(transaction=True)) are refused across slots too: each one's keys.
TRANSACTIONS = {
    "store/keys.py create": lambda team: [
        rediskeys.key_record("ab" * 32),
        rediskeys.key_index(),
    ],
    "anomalies/records.py save / forget": lambda team: [
        rediskeys.anomaly_state(),
        rediskeys.anomaly_records(),
        rediskeys.anomaly_index(),
        rediskeys.anomaly_feedback(),
    ],
    "aggregator/reviews.py": lambda team: [
        rediskeys.review_digests(),
        rediskeys.review_lease(),
    ],
}


@pytest.mark.parametrize("block", sorted(TRANSACTIONS))
@pytest.mark.parametrize("team", TEAMS[:3])
def test_transaction_keys_share_one_slot(block: str, team: str) -> None:
    keys = TRANSACTIONS[block](team)
    assert len({slot_of(k) for k in keys}) == 1, f"{block}: {keys}"
