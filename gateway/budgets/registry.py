"""The budgets in force: the config's rules plus budgets created through the admin API.

Admin budgets live in one Redis hash (`rediskeys.admin_budgets()`, name -> JSON) and are reloaded
by `refresh()` every few seconds, so every replica converges on them. `rules_for` runs on every
request: it reads an index by team and a small per-caller cache, never Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.budgets.definitions import budget_from_dict, budget_to_dict
from gateway.budgets.periods import applicable
from gateway.config.model import BudgetConfig
from gateway.store.connect import fsynced
from gateway.types import Principal

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("spendgate.budgets")

# Callers are few (keys x projects x tag sets); the cache is dropped whole when it fills up
# or when the rules change, which keeps lookups a single dict get.
_CACHE_MAX = 10_000

_CallerKey = tuple[str, str, str | None, tuple[tuple[str, str], ...]]


class BudgetExists(ValueError):
    """A budget with this name is already in force (in the config or created by an admin)."""


class DeclaredInConfig(ValueError):
    """The budget is the config's: it changes only with the YAML."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"budget {name!r} is declared in the config file: change it there "
            "(teams.<team>.budgets or budgets.rules) and reload"
        )


class BudgetRegistry:
    def __init__(
        self, redis: Redis, config_rules: Sequence[BudgetConfig], refresh_s: float = 5.0
    ) -> None:
        self._redis = redis
        self.refresh_s = refresh_s
        self._config: tuple[BudgetConfig, ...] = ()
        self._admin: tuple[BudgetConfig, ...] = ()
        self._by_team: dict[str, tuple[BudgetConfig, ...]] = {}
        self._cache: dict[_CallerKey, tuple[BudgetConfig, ...]] = {}
        self.set_config_rules(config_rules)

    def rules_for(self, principal: Principal) -> tuple[BudgetConfig, ...]:
        """Every budget that applies to `principal`; no I/O."""
        tags = principal.tags
        key: _CallerKey = (
            principal.team,
            principal.key_id,
            principal.project,
            tuple(sorted(tags.items())) if tags else (),
        )
        found = self._cache.get(key)
        if found is None:
            found = applicable(self._by_team.get(principal.team, ()), principal)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def all(self, team: str | None = None) -> tuple[BudgetConfig, ...]:
        """Every budget in force (config first, then admin), optionally of one team."""
        if team is not None:
            return self._by_team.get(team, ())
        return self._config + self._admin

    def get(self, name: str) -> BudgetConfig | None:
        return next((b for b in self.all() if b.name == name), None)

    def set_config_rules(self, rules: Iterable[BudgetConfig]) -> None:
        """Install a (re)loaded config's budgets."""
        self._config = tuple(rules)
        self._rebuild()

    async def refresh(self) -> None:
        """Reload admin budgets from Redis. Raises RedisError (the old set stays in force)."""
        raw = await self._redis.hgetall(rediskeys.admin_budgets())
        self._set_admin(_parse_all(raw))

    async def refresh_forever(self) -> None:
        """Run `refresh` every `refresh_s` until cancelled (an app-owned task)."""
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("admin budgets not refreshed (%s); keeping the current set", exc)
            await asyncio.sleep(self.refresh_s)

    async def create(self, budget: BudgetConfig) -> BudgetConfig:
        """Store an admin budget. BudgetExists if the name is taken (config or admin)."""
        if any(b.name == budget.name for b in self._config):
            raise BudgetExists(f"budget {budget.name!r} is declared in the config")
        budget = _as_admin(budget)
        payload = orjson.dumps(budget_to_dict(budget))
        # HSETNX: two replicas creating the same name at once cannot both win.
        if not await self._redis.hsetnx(rediskeys.admin_budgets(), budget.name, payload):
            raise BudgetExists(f"an admin budget named {budget.name!r} already exists")
        await fsynced(self._redis)
        self._set_admin((*(b for b in self._admin if b.name != budget.name), budget))
        return budget

    async def put(self, budget: BudgetConfig) -> bool:
        """Create or replace an admin budget; True if it is new. A replaced budget keeps its
        counters while its team, name and period stay (a raised limit applies to what was
        already spent)."""
        if any(b.name == budget.name for b in self._config):
            raise DeclaredInConfig(budget.name)
        budget = _as_admin(budget)
        payload = orjson.dumps(budget_to_dict(budget))
        created = bool(await self._redis.hset(rediskeys.admin_budgets(), budget.name, payload))
        await fsynced(self._redis)
        self._set_admin((*(b for b in self._admin if b.name != budget.name), budget))
        return created

    async def delete(self, name: str) -> bool:
        """Delete an admin budget; False if there is none by that name. Its counters stay until
        they expire (spend already recorded is not rewritten)."""
        if any(b.name == name for b in self._config):
            raise DeclaredInConfig(name)
        removed = int(await self._redis.hdel(rediskeys.admin_budgets(), name))
        await fsynced(self._redis)
        self._set_admin(tuple(b for b in self._admin if b.name != name))
        return removed > 0

    def _set_admin(self, budgets: Iterable[BudgetConfig]) -> None:
        config_names = {b.name for b in self._config}
        admin = []
        for budget in sorted(budgets, key=lambda b: b.name):
            if budget.name in config_names:
                # The config was reloaded with a name an admin had taken: the config wins.
                log.warning("admin budget %r is shadowed by a config budget", budget.name)
                continue
            admin.append(budget)
        self._admin = tuple(admin)
        self._rebuild()

    def _rebuild(self) -> None:
        by_team: dict[str, list[BudgetConfig]] = {}
        for budget in self._config + self._admin:
            by_team.setdefault(budget.team, []).append(budget)
        self._by_team = {team: tuple(rules) for team, rules in by_team.items()}
        self._cache = {}


def _as_admin(budget: BudgetConfig) -> BudgetConfig:
    return budget if budget.source == "admin" else replace(budget, source="admin")


def _parse_all(raw: Mapping[bytes | str, bytes | str]) -> list[BudgetConfig]:
    budgets = []
    for name, payload in raw.items():
        try:
            budgets.append(_as_admin(budget_from_dict(orjson.loads(payload))))
        except (orjson.JSONDecodeError, ValueError) as exc:
            label = name.decode(errors="replace") if isinstance(name, bytes) else name
            log.error("admin budget %r is unreadable and ignored: %s", label, exc)
    return budgets
