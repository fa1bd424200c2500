"""Posting an external cost (a training run's GPU hours, a vendor invoice line) to the spend
ledger: a `kind="external"` SpendEvent appended to the team's stream, like the settle script's,
so rollups, reports and unit economics include it. Idempotent by the caller's id: a retried post
(same id, same content) is recognised and not counted again; the same id with other content is
refused. Its FOCUS classification (`ChargeClass`) travels on the event; a service name keeps the
category it was first posted with (`rediskeys.external_services`)."""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import orjson

from gateway import rediskeys
from gateway.analytics.taxonomy import INTERNAL_PROVIDER, ChargeClass
from gateway.types import EMPTY_TAGS, SpendEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis


class IdempotencyConflict(ValueError):
    """The id was already used for a cost with different content."""


class ServiceConflict(ValueError):
    """The service name was posted before with another service category or subcategory."""


@dataclass(frozen=True, slots=True)
class ExternalCost:
    id: str  # the caller's idempotency id
    team: str
    amount_nano: int
    description: str
    ts_ms: int | None = None  # None: now (a retry then keeps the first post's time)
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    provider: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    charge: ChargeClass = field(default_factory=ChargeClass)

    @property
    def event_id(self) -> str:
        return f"ext:{self.id}"

    @property
    def service_name(self) -> str:
        """The ServiceName of its FOCUS row: the one it names, else its provider's."""
        return self.charge.service_name or self.provider or INTERNAL_PROVIDER

    def digest(self) -> str:
        content: dict[str, object] = {
            "team": self.team,
            "amount_nano": self.amount_nano,
            "description": self.description,
            "ts_ms": self.ts_ms,
            "project": self.project,
            "environment": self.environment,
            "workload": self.workload,
            "provider": self.provider,
            "tags": dict(self.tags),
        }
        if self.charge != ChargeClass():  # so that a cost posted before classes keeps its digest
            content["charge"] = self.charge.to_json()
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def event(self, ts_ms: int) -> SpendEvent:
        return SpendEvent(
            event_id=self.event_id,
            ts_ms=ts_ms,
            team=self.team,
            kind="external",
            project=self.project,
            environment=self.environment,
            workload=self.workload,
            tags=MappingProxyType(dict(self.tags)),
            provider=self.provider or "",
            cost_nano=self.amount_nano,
            list_cost_nano=self.amount_nano,  # no optimization applies: no savings
            description=self.description,
            charge=None if self.charge == ChargeClass() else self.charge.to_json(),
        )


@dataclass(frozen=True, slots=True)
class Posted:
    event: SpendEvent
    duplicate: bool  # True: an earlier post with this id was found; nothing was added


async def post_external_cost(redis: Redis, cost: ExternalCost, now_ms: int) -> Posted:
    await _claim_service(redis, cost)
    ts_ms = cost.ts_ms if cost.ts_ms is not None else now_ms
    event = cost.event(ts_ms)
    digest = cost.digest()
    script = redis.register_script(_LUA.read_text())
    args: list[str | int] = [f"{digest} {ts_ms}", rediskeys.EXTERNAL_COST_MARKER_TTL_S]
    for name, value in event.to_fields().items():
        args += [name, value]
    marker = rediskeys.external_cost_marker(cost.team, cost.id)
    earlier = await script(keys=[marker, rediskeys.events_stream(cost.team)], args=args)
    # Every time, retries included: the aggregator finds streams through this registry.
    await redis.sadd(rediskeys.streams_registry(), cost.team)
    if earlier is None:
        return Posted(event, duplicate=False)
    earlier_digest, _, earlier_ts = _text(earlier).partition(" ")
    if earlier_digest != digest:
        raise IdempotencyConflict(
            f"id {cost.id!r} was already used for a different cost of team {cost.team!r}"
        )
    return Posted(cost.event(int(earlier_ts)), duplicate=True)


async def _claim_service(redis: Redis, cost: ExternalCost) -> None:
    """Record the service's classification, or refuse one that differs from the first."""
    key, name = rediskeys.external_services(), cost.service_name
    klass = f"{cost.charge.service_category}|{cost.charge.service_subcategory}"
    if await redis.hsetnx(key, name, klass):
        return
    earlier = _text(await redis.hget(key, name))
    if earlier != klass:
        category, _, subcategory = earlier.partition("|")
        raise ServiceConflict(
            f"service {name!r} was posted before as {category!r} / {subcategory!r}: a service "
            "has one category in FOCUS (post it so, or name the service differently)"
        )


_LUA = importlib.resources.files("gateway.reports") / "lua" / "post_external_cost.lua"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
