"""The stage protocol: what a request-path stage (an optimizer, a rule) may do, and the
`Context` every stage of one request shares.

A stage may act at three points of a request, each optional:

- `before(ctx)`: before the upstream call, in the registry's order. It may refuse the request
  (raise a `GatewayError`), change the plan, add response headers (`ctx.headers`), or answer
  instead of the upstream (a response: a cache hit). An `async def` is the plain way; a stage
  on every request that rarely waits may be a plain `def` that returns None when it is done
  and an awaitable (of None or a response) only when it must wait: no coroutine per request.
- `answer(ctx)`: the upstream call made another way (a cascade, a merged batch, a call shared
  with identical requests). The first stage that returns an `Answer` serves the request; when
  none does, the pipeline streams or calls the route itself.
- `after(ctx)`: once the response has been written, whatever happened (an error included);
  synchronous and never raising: keep an answer, give back what was held.

`swap(config)` follows a config reload; `aclose()` runs at shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.accounting import Accountant, Record
from gateway.budgets.messages import remaining_headers
from gateway.cache.store import ResponseCache
from gateway.config.model import Config, ModelRoute
from gateway.metrics import Metrics
from gateway.plan import Plan
from gateway.providers.base import Provider
from gateway.routing.tiers import TierDecision
from gateway.stages.upstream import Answer, Upstream

if TYPE_CHECKING:
    from redis.asyncio import Redis

Snapshot = tuple[Config, Mapping[str, Provider]]


@dataclass(frozen=True, slots=True)
class Services:
    """What stages are built from: the gateway's shared components."""

    metrics: Metrics
    accountant: Accountant
    cache: ResponseCache
    upstream: Upstream
    snapshot: Callable[[], Snapshot]  # the current config and providers
    new_request_id: Callable[[], str]
    store: Redis | None = None  # the shared store (Redis, the local store, fakeredis)
    clock: Callable[[], float] = time.time  # the wall clock (epoch seconds)


class Context:
    """One request as the stages see it. `plan` exists once the routing stage has run."""

    __slots__ = (
        "_plan",
        "answer",
        "body",
        "completion",
        "config",
        "decision",
        "headers",
        "listed",
        "notes",
        "prompt_tokens",
        "providers",
        "record",
        "request",
        "route",
        "size",
    )

    def __init__(
        self,
        request: web.Request,
        record: Record,
        config: Config,
        providers: Mapping[str, Provider],
    ) -> None:
        self.request = request
        self.record = record
        self.config = config
        self.providers = providers
        self.body: dict[str, Any] = {}
        self.size = 0  # the body's size in bytes
        # What a tier decided, before the plan exists (the routing stage reads them).
        self.decision: TierDecision | None = None
        self.route: ModelRoute | None = None
        self.listed: ModelRoute | None = None
        self.prompt_tokens: int | None = None
        self._plan: Plan | None = None
        # Response headers stages add; every answer carries them, error answers included.
        self.headers: dict[str, str] = {}
        self.answer: Answer | None = None  # the whole upstream answer the client got
        self.completion: dict[str, Any] | None = None  # a finished stream, as one answer
        self.notes: dict[str, object] = {}  # a stage's own per-request state, by stage name

    @property
    def plan(self) -> Plan:
        assert self._plan is not None, "the routing stage makes the plan"
        return self._plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        self._plan = plan

    @property
    def planned(self) -> bool:
        return self._plan is not None

    def response_headers(self, settled: bool = False) -> dict[str, str]:
        """The headers every answer carries but `x-sg-model`, which its sender adds.
        `settled`: the request's charges are final (a whole answer), so the remaining budget
        is shown after its actual cost rather than its worst case."""
        record = self.record
        headers = self.headers.copy()  # the stages' (one copy: an error may still use them)
        headers["x-request-id"] = record.request_id
        headers["x-sg-cache"] = record.cache
        if record.route_text:
            headers["x-sg-route"] = record.route_text
        if record.reservation is not None:
            spent = (record.cost_nano, record.tokens) if settled else None
            headers.update(remaining_headers(record.reservation, spent))
        return headers


class Stage:
    """A request-path stage. Subclasses override the points they act at; the pipeline only
    calls the ones a stage overrides."""

    name = "stage"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, ctx: Context) -> Awaitable[web.StreamResponse | None] | None:
        return None

    async def answer(self, ctx: Context) -> Answer | None:
        return None

    def after(self, ctx: Context) -> None:
        return None

    def swap(self, config: Config) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def overrides(self, point: str) -> bool:
        return getattr(type(self), point) is not getattr(Stage, point)
