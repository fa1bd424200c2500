"""The budgets in force: config rules plus admin-made ones shared by replicas through Redis."""

from __future__ import annotations

import dataclasses
import logging
from types import MappingProxyType

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.budgets.registry import BudgetExists, BudgetRegistry
from gateway.types import Principal
from tests.budgets.support import budget

CALLER = Principal(
    key_id="key_0123456789ab",
    team="alpha",
    project="search",
    tags=MappingProxyType({"exp": "a1"}),
)


async def test_rules_for_indexes_by_team_and_caches(store: Redis) -> None:
    team, tag = budget("alpha-team"), budget("alpha-exp", scope="tag", match="exp=a1")
    beta = budget("beta-team", team="beta")
    registry = BudgetRegistry(store, [team, tag, beta])
    assert registry.rules_for(CALLER) == (team, tag)
    assert registry.rules_for(CALLER) is registry.rules_for(CALLER)  # cached
    untagged = dataclasses.replace(CALLER, tags=MappingProxyType({}))
    assert registry.rules_for(untagged) == (team,)
    assert registry.rules_for(Principal(key_id="key_x", team="gamma")) == ()
    assert registry.all("beta") == (beta,) and registry.all() == (team, tag, beta)

    reloaded = budget("alpha-project", scope="project", match="search")
    registry.set_config_rules([reloaded])
    assert registry.rules_for(CALLER) == (reloaded,)  # the cache went with the old rules


async def test_admin_budgets_reach_every_replica(store: Redis) -> None:
    config = budget("alpha-monthly")
    one, two = BudgetRegistry(store, [config]), BudgetRegistry(store, [config])
    created = await one.create(budget("alpha-daily", period="daily", limit_nano=5))
    assert created.source == "admin"
    assert one.rules_for(CALLER) == (config, created)
    assert two.rules_for(CALLER) == (config,)
    await two.refresh()
    assert two.rules_for(CALLER) == (config, created)
    assert two.get("alpha-daily") == created

    with pytest.raises(BudgetExists, match="declared in the config"):
        await two.create(budget("alpha-monthly"))
    with pytest.raises(BudgetExists, match="already exists"):
        await two.create(budget("alpha-daily"))

    assert await two.delete("alpha-daily")
    assert not await two.delete("alpha-daily")
    assert two.rules_for(CALLER) == (config,)
    await one.refresh()
    assert one.rules_for(CALLER) == (config,)


async def test_config_wins_over_an_admin_budget_of_the_same_name(
    store: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    registry = BudgetRegistry(store, [])
    await registry.create(budget("shared-name", limit_nano=1))
    registry.set_config_rules([config := budget("shared-name", limit_nano=2)])
    with caplog.at_level(logging.WARNING, "spendgate.budgets"):
        await registry.refresh()
    assert registry.all() == (config,)
    assert "shadowed" in caplog.text


async def test_unreadable_admin_budgets_are_skipped(
    store: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await store.hset(rediskeys.admin_budgets(), "broken", b"{not json")
    await store.hset(rediskeys.admin_budgets(), "wrong", b'{"name": "wrong", "scope": "planet"}')
    registry = BudgetRegistry(store, [])
    await registry.create(good := budget("good", limit_nano=1))
    with caplog.at_level(logging.ERROR, "spendgate.budgets"):
        await registry.refresh()
    assert [b.name for b in registry.all()] == [good.name]
    assert "admin budget 'broken' is unreadable" in caplog.text
