"""Money for one request: reserve its worst case against its budgets, then settle what it cost.

`Accountant.reserve` runs before the upstream call (429 `budget_exceeded`, or a downgrade to a
cheaper model); `Accountant.finish` runs for every request, whatever its outcome: it writes the
metrics and the access-log line at once and settles the spend events in a task the accountant
owns, so neither a slow Redis nor a cancelled handler can lose or delay them. A settle that
cannot reach Redis goes to the local spool and is replayed, idempotently, when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from gateway.budgets.alerts import AlertSender
from gateway.budgets.ledger import BudgetLedger, Reservation, SettleResult
from gateway.budgets.messages import exceeded_error
from gateway.budgets.registry import BudgetRegistry
from gateway.budgets.spool import Spool
from gateway.cache.fingerprint import prefix_fingerprint, request_fingerprint, request_shape
from gateway.config.model import BudgetConfig, Config, Deployment, ModelRoute
from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.pricing.cost import cost_nano
from gateway.pricing.price import Price
from gateway.types import NANO_PER_USD, Principal, SpendEvent, Usage, nano_to_usd_str

log = logging.getLogger("spendgate.access")
budget_log = logging.getLogger("spendgate.budgets")

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_SETTLE_BATCH = 128  # settles per round trip to Redis
# While other requests are in progress a flush first waits up to this long for more of them to
# finish, unless a whole batch is queued: each settle would otherwise be a round trip (and a
# system call or two) of its own, paid on the event loop between one request and the next.
SETTLE_WINDOW_S = 0.01
# With no request in progress a flush waits this long for the next one to begin and finish: one
# client sending request after request would otherwise pay a round trip per request (on a VM a
# wake-up of the loop costs tens of microseconds of CPU), and the idle gateway loses nothing.
IDLE_WINDOW_S = 0.002
# A finished request's bookkeeping (its metrics, access line and spend events) waits for the
# request path's next lull (`Accountant.lull`), or this long when none comes.
BOOK_WITHIN_S = 0.001
# The longest the request path waits on Redis before treating it as unavailable (fail open or
# closed). A reserve that timed out may still have run: its hold is released at its deadline.
# A settle that timed out is spooled, and replayed once by event id.
STORE_TIMEOUT_S = 2.0

# What one settle needs: (reservation, team, request id, budgets, event).
_SettleItem = tuple["Reservation | None", str, str, tuple[BudgetConfig, ...], SpendEvent]


@dataclass(slots=True)
class Charge:
    """One thing the request is billed for: an upstream call, or a cache hit."""

    served_model: str
    provider: str
    deployment: str
    usage: Usage
    cost_nano: int
    list_cost_nano: int
    optimization: str | None = None


@dataclass(slots=True)
class Record:
    """What one request did; the spend events, metrics and access log are written from it."""

    request_id: str
    endpoint: str
    started: float
    stream: bool = False
    status: int = 200
    outcome: str = "ok"
    principal: Principal | None = None
    model: str | None = None  # the name the client asked for
    route: ModelRoute | None = None  # the model that serves it (after tiering / downgrade)
    charges: list[Charge] = field(default_factory=list)
    cache: str = "none"
    route_text: str | None = None  # the x-sg-route explanation of a tier decision
    budgets: tuple[BudgetConfig, ...] = ()
    reservation: Reservation | None = None
    upstream_s: float = 0.0
    first_byte_s: float | None = None
    attempts: int = 0
    error: str | None = None
    revenue_nano: int | None = None
    rate_limited: str | None = None  # "<rule>:<requests|tokens>" of the rate limit that refused it
    # Why this request is served below list price, when the route itself says so (a budget
    # downgrade); otherwise a cheaper served model counts as tiering.
    optimization: str | None = None
    # The parsed request body, read once in `finish` for the recommendations' signals (hashes
    # and a shape; see `gateway.cache.fingerprint`) and dropped there: no text is kept.
    body: Mapping[str, Any] | None = None
    body_size: int = 0  # its size in bytes, as received
    # What governance policies did ("<policy>=<action>", comma-separated) and the approval used
    # or asked for (gateway.policies).
    policy: str | None = None
    approval_id: str | None = None

    @property
    def cost_nano(self) -> int:
        total = 0
        for c in self.charges:  # a loop: a generator costs more than the sum of one or two
            total += c.cost_nano
        return total

    @property
    def list_cost_nano(self) -> int:
        """What the charges would have cost at the requested model's list price."""
        total = 0
        for c in self.charges:
            total += c.list_cost_nano
        return total

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens: what a token budget counts."""
        total = 0
        for c in self.charges:
            total += c.usage.prompt_tokens + c.usage.completion_tokens
        return total

    @property
    def usage(self) -> Usage:
        total = Usage(estimated=any(c.usage.estimated for c in self.charges))
        for c in self.charges:
            total.prompt_tokens += c.usage.prompt_tokens
            total.cached_prompt_tokens += c.usage.cached_prompt_tokens
            total.completion_tokens += c.usage.completion_tokens
            total.reasoning_tokens += c.usage.reasoning_tokens
        return total

    def charge(
        self,
        deployment: Deployment,
        provider: str,
        usage: Usage,
        list_price: Price,
        optimization: str | None = None,
    ) -> Charge:
        """Bill one upstream call: its cost at the deployment's price, its list cost at the
        requested model's price (the difference is what the optimization saved)."""
        cost = cost_nano(usage, deployment.price)
        listed = cost_nano(usage, list_price)
        if optimization is None and listed > cost:
            optimization = self.optimization or "tiering"
        item = Charge(deployment.model, provider, deployment.id, usage, cost, listed, optimization)
        self.charges.append(item)
        return item


def output_cap(body: Mapping[str, Any]) -> int:
    """The output tokens a request allows per choice (0: it sets no cap)."""
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int):
            return value
    return 0


def worst_case(
    route: ModelRoute, body: Mapping[str, Any], prompt_tokens: int, endpoint: str
) -> tuple[int, int]:
    """(nano-USD, tokens) the request can cost at most, on the route's dearest deployment."""
    output = 0
    if endpoint != "embeddings":
        output = output_cap(body)
        n = body.get("n")
        if isinstance(n, int):
            output *= n
    worst = 0
    for d in route.deployments:
        p = d.price
        per_m = prompt_tokens * p.dearest_input_per_m + output * p.dearest_output_per_m
        worst = max(worst, -(-per_m // 1_000_000))
    return worst, prompt_tokens + output


class Accountant:
    def __init__(
        self,
        ledger: BudgetLedger,
        registry: BudgetRegistry,
        spool: Spool | None,
        alerts: AlertSender,
        metrics: Metrics,
        access_writer: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the wall clock that dates spend events (tests inject a fixed one)."""
        self.ledger = ledger
        self.registry = registry
        self.spool = spool
        self.alerts = alerts
        self.metrics = metrics
        self._access_writer = access_writer
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue: list[_SettleItem] = []
        self._flushing = False
        self._open = 0  # requests begun and not finished
        self._wake: asyncio.Future[None] | None = None  # a flush waiting for company
        # Requests whose response has gone out, with their latency and end time, not yet booked.
        self._finished: list[tuple[Record, float, int]] = []
        self._book_timer: asyncio.TimerHandle | None = None
        self._lull_booking = False  # `book` is scheduled by a lull
        metrics.before_collect(self.book)
        self._used_pct: dict[str, float] = {}  # team -> tightest budget's used %, last seen
        self._refusals: dict[tuple[str, str, str], int] = {}  # (team, budget, action) -> count

    def used_pct(self, principal: Principal) -> float | None:
        """The tightest budget's used percent as this replica last saw it (for tier rules)."""
        return self._used_pct.get(principal.team)

    async def reserve(
        self,
        record: Record,
        config: Config,
        route: ModelRoute,
        body: Mapping[str, Any],
        prompt_tokens: int,
        downgrade: bool = True,
    ) -> Reservation | None:
        """Hold the worst case against every budget of the request. Raises the 429 of a
        `block` budget; returns the refused reservation when a `downgrade` budget refused (the
        caller then reserves again for the cheaper model with `downgrade=False`)."""
        if downgrade and self.reserve_locally(record, route, body, prompt_tokens):
            return None
        amount, tokens = worst_case(route, body, prompt_tokens, record.endpoint)
        refused = await self._reserve_in_store(record, config, amount, tokens, downgrade)
        if refused is not None and refused.exceeded is not None:
            self._count_refusal(record, refused.exceeded.name, "downgrade")
        return refused

    def reserve_locally(
        self, record: Record, route: ModelRoute, body: Mapping[str, Any], prompt_tokens: int
    ) -> bool:
        """True when the request needs no round trip to the store: no budget applies, or a lease
        this process holds covers its worst case (then it is reserved against the lease)."""
        assert record.principal is not None
        record.budgets = self.registry.rules_for(record.principal)
        if not record.budgets:
            return True
        return self._reserve_leased(
            record, *worst_case(route, body, prompt_tokens, record.endpoint)
        )

    async def hold(self, record: Record, config: Config, amount_nano: int) -> None:
        """Hold a cost known in advance (a cache hit's price, possibly 0) against every budget
        of the request, as a request's worst case is held (leases included): a `block` budget
        it would take over its limit refuses it (429); a `downgrade` budget only counts it, as
        nothing is cheaper than a hit."""
        assert record.principal is not None
        record.budgets = self.registry.rules_for(record.principal)
        if not record.budgets or self._reserve_leased(record, amount_nano, 0):
            return
        if await self._reserve_in_store(record, config, amount_nano, 0, downgrade=True):
            await self._reserve_in_store(record, config, amount_nano, 0, downgrade=False)

    def _reserve_leased(self, record: Record, amount: int, tokens: int) -> bool:
        assert record.principal is not None
        team = record.principal.team
        leased = self.ledger.reserve_leased(team, record.request_id, record.budgets, amount, tokens)
        if leased is None:
            return False
        record.reservation = leased
        self._remember(team, leased)
        return True

    async def _reserve_in_store(
        self, record: Record, config: Config, amount: int, tokens: int, downgrade: bool
    ) -> Reservation | None:
        assert record.principal is not None
        team = record.principal.team
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                reservation = await self.ledger.reserve(
                    team,
                    record.request_id,
                    record.budgets,
                    amount,
                    tokens,
                    config.budgets.reservation_ttl_s,
                    enforce_downgrade=downgrade,
                )
        except (RedisError, OSError) as exc:
            if config.store.on_unavailable == "closed":
                raise ServiceUnavailable(
                    "budgets cannot be checked (the store is unreachable) and this gateway "
                    "is configured to refuse requests then (store.on_unavailable: closed)"
                ) from exc
            budget_log.warning("store unreachable, serving without a budget check: %s", exc)
            return None
        self._remember(team, reservation)
        if reservation.ok:
            record.reservation = reservation
            return None
        self._spawn(self.alerts.budget_exceeded(reservation))
        exceeded = reservation.exceeded
        if exceeded is not None and exceeded.on_exceed == "downgrade":
            return reservation  # counted by the caller, which switches the model
        if exceeded is not None:
            self.metrics.budget_refusals.labels(team, exceeded.name, "block").inc()
            self._count_refusal(record, exceeded.name, "block")
        raise exceeded_error(reservation)

    def _count_refusal(self, record: Record, budget: str, action: str) -> None:
        """For the scorecard, which needs the counts of past months (metrics restart with the
        process): one HINCRBY in the background, off the refused request's path."""
        assert record.principal is not None
        what = (record.principal.team, budget, action)
        first = not self._refusals
        self._refusals[what] = self._refusals.get(what, 0) + 1
        if first:  # a storm of refusals is counted in a few calls, not one each
            self._spawn(self._count_refusals())

    async def _count_refusals(self) -> None:
        while self._refusals:
            counts, self._refusals = self._refusals, {}
            try:
                for (team, budget, action), n in counts.items():
                    await self.ledger.count_refusal(team, budget, action, n)
            except (RedisError, OSError) as exc:  # a lost count, never lost money
                budget_log.info("budget refusals not counted (%s)", exc)

    def begin(self) -> None:
        """A request has begun; `finish` ends it."""
        self._open += 1

    def finish(self, record: Record) -> None:
        """The request's response has gone out. Its latency and time are taken now; its
        bookkeeping (metrics, the access line, the spend events) waits for the request path's
        next lull, at most `BOOK_WITHIN_S`."""
        self._open -= 1
        elapsed = time.perf_counter() - record.started
        self._finished.append((record, elapsed, int(self._clock() * 1000)))
        if self._book_timer is None:
            self._book_timer = asyncio.get_running_loop().call_later(BOOK_WITHIN_S, self.book)

    def lull(self) -> None:
        """A request is about to wait on its upstream: the finished requests are booked in that
        wait. Booked right after each response instead, they would sit between a client's
        response and its next request: one client sending request after request waited for
        each of its previous request's bookkeeping (~0.1 ms on the benchmark VM)."""
        if self._finished and not self._lull_booking:
            self._lull_booking = True
            asyncio.get_running_loop().call_soon(self.book)

    def book(self) -> None:
        """Book the finished requests now: metrics, access lines, spend events queued to settle
        (before reading metrics, and on shutdown)."""
        lulling, self._lull_booking = self._lull_booking, False
        if self._book_timer is not None:
            self._book_timer.cancel()
            self._book_timer = None
        finished, self._finished = self._finished, []
        queued = False
        for record, elapsed, ts_ms in finished:
            try:
                self._observe(record, elapsed)
                queued = self._queue_events(record, elapsed, ts_ms) or queued
            except Exception:  # one request's fault must not cost the others their events
                budget_log.exception("bookkeeping of request %s failed", record.request_id)
        if not queued:
            return
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())
        # A flush waiting for company goes once no other request is in progress (the one
        # whose wait this is does not count: it has only begun).
        elif self._open - (1 if lulling else 0) <= 0 and self._wake is not None:
            _set_none(self._wake)

    def _queue_events(self, record: Record, elapsed: float, ts_ms: int) -> bool:
        if record.principal is None or (record.route is None and not record.charges):
            return False
        team = record.principal.team
        for i, event in enumerate(self._events(record, ts_ms, elapsed)):
            reservation = record.reservation if i == 0 else None
            self._queue.append((reservation, team, record.request_id, record.budgets, event))
        return True

    async def drain(self) -> None:
        """Book what finished and wait for every settle in progress (tests, shutdown)."""
        self.book()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remember(self, team: str, reservation: Reservation) -> None:
        pcts = [s.pct for s in reservation.status]
        if pcts:
            self._used_pct[team] = max(pcts)

    async def _flush(self) -> None:
        """Settle what requests queued, many per round trip: under load the requests that
        finish while one batch is in flight go together in the next."""
        try:
            if len(self._queue) < _SETTLE_BATCH:
                await self._company(SETTLE_WINDOW_S if self._open else IDLE_WINDOW_S)
            while self._queue:
                batch, self._queue = self._queue[:_SETTLE_BATCH], self._queue[_SETTLE_BATCH:]
                try:
                    async with asyncio.timeout(STORE_TIMEOUT_S):
                        results = await self.ledger.settle_many(batch)
                except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                    results = [exc] * len(batch)
                for item, result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        self._spool(item, result)
                    else:
                        await self._settled(item[1], result)
        finally:
            self._flushing = False

    async def _company(self, window_s: float) -> None:
        """Until `window_s` has passed or a request finishes leaving none in progress."""
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(window_s, _set_none, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _spool(self, item: _SettleItem, exc: Exception) -> None:
        reservation, team, request_id, budgets, event = item
        if self.spool is None:
            budget_log.error(
                "spend event %s lost: the store failed and there is no spool: %s",
                event.event_id,
                exc,
            )
            return
        budget_log.warning("store unreachable, spooling spend event %s: %s", event.event_id, exc)
        self.spool.append_settle(reservation, team, request_id, budgets, event)

    async def _settled(self, team: str, result: SettleResult) -> None:
        if result.status:
            self._used_pct[team] = max(s.pct for s in result.status)
        for budget, threshold in result.crossed:
            status = next(s for s in result.status if s.budget is budget)
            await self.alerts.budget_threshold(budget, threshold, status)

    def _events(self, record: Record, ts_ms: int, elapsed: float) -> list[SpendEvent]:
        p = record.principal
        assert p is not None
        charges = record.charges or [Charge("", "", "", Usage(), 0, 0)]
        fingerprint = prefix = shape = None
        if record.body is not None:
            body, endpoint, record.body = record.body, record.endpoint, None
            fingerprint = request_fingerprint(endpoint, body)
            prefix = prefix_fingerprint(endpoint, body, record.body_size)
            shape = request_shape(endpoint, body)
        events = []
        for i, c in enumerate(charges):
            events.append(
                SpendEvent(
                    event_id=record.request_id if i == 0 else f"{record.request_id}:{i}",
                    ts_ms=ts_ms,
                    team=p.team,
                    request_id=record.request_id,
                    key_id=p.key_id,
                    project=p.project,
                    environment=p.environment,
                    workload=p.workload,
                    tags=p.tags,
                    endpoint=record.endpoint,
                    requested_model=record.model or "",
                    served_model=c.served_model,
                    provider=c.provider,
                    deployment=c.deployment,
                    prompt_tokens=c.usage.prompt_tokens,
                    cached_prompt_tokens=c.usage.cached_prompt_tokens,
                    completion_tokens=c.usage.completion_tokens,
                    reasoning_tokens=c.usage.reasoning_tokens,
                    tokens_estimated=c.usage.estimated,
                    cost_nano=c.cost_nano,
                    list_cost_nano=c.list_cost_nano,
                    optimization=c.optimization,
                    cache=record.cache,
                    route=record.route_text,
                    latency_ms=_ms(elapsed),
                    status=record.status,
                    outcome=record.outcome,
                    revenue_nano=record.revenue_nano if i == 0 else None,
                    fingerprint=fingerprint,
                    prefix=prefix,
                    shape=shape,
                )
            )
        return events

    def _observe(self, record: Record, elapsed: float) -> None:
        m = self.metrics
        model = record.model if record.route is not None else "<unknown>"
        model = model or "<unknown>"
        team = record.principal.team if record.principal else "<none>"
        provider = record.charges[-1].provider if record.charges else "<none>"
        requests, seconds, overheads = m.request_series(
            record.endpoint, model, provider or "<none>", team, record.status
        )
        requests.inc()
        seconds.observe(elapsed)
        overhead = record.first_byte_s if record.first_byte_s is not None else elapsed
        overheads.observe(max(0.0, overhead - record.upstream_s))
        if record.principal is not None:
            for c in record.charges:
                u = c.usage
                for kind, count in (
                    ("prompt", u.prompt_tokens),
                    ("cached_prompt", u.cached_prompt_tokens),
                    ("completion", u.completion_tokens),
                    ("reasoning", u.reasoning_tokens),
                ):
                    if count:
                        m.child(m.tokens, team, model, kind).inc(count)
                if c.cost_nano:
                    m.child(m.cost_usd, team, model).inc(c.cost_nano / NANO_PER_USD)
                if c.list_cost_nano > c.cost_nano and c.optimization:
                    m.child(m.savings_usd, team, c.optimization).inc(
                        (c.list_cost_nano - c.cost_nano) / NANO_PER_USD
                    )
        if log.isEnabledFor(logging.INFO):
            fields = _access_fields(record, elapsed)
            if self._access_writer is not None:
                self._access_writer(fields)
            else:
                log.info("request", extra={"access": fields})


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ms(seconds: float) -> float:
    """Milliseconds to three decimals, half up: round(seconds * 1000, 3) without its trip
    through a decimal string."""
    return int(seconds * 1_000_000 + 0.5) / 1000


def _access_fields(record: Record, elapsed: float) -> dict[str, Any]:
    p, charges = record.principal, record.charges
    last = charges[-1] if charges else None
    u = charges[0].usage if len(charges) == 1 else record.usage
    return {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "status": record.status,
        "outcome": record.outcome,
        "error": record.error,
        "stream": record.stream,
        "key_id": p.key_id if p else None,
        "team": p.team if p else None,
        "project": p.project if p else None,
        "environment": p.environment if p else None,
        "workload": p.workload if p else None,
        "model": record.model,
        "served_model": last.served_model if last else None,
        "deployment": last.deployment if last else None,
        "provider": last.provider if last else None,
        "route": record.route_text,
        "rate_limited": record.rate_limited,
        "policy": record.policy,
        "approval_id": record.approval_id,
        "cache": record.cache,
        "attempts": record.attempts,
        "upstream_calls": len(charges),
        "prompt_tokens": u.prompt_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "tokens_estimated": u.estimated,
        "cost_usd": nano_to_usd_str(record.cost_nano),
        "list_cost_usd": nano_to_usd_str(record.list_cost_nano),
        "latency_ms": _ms(elapsed),
        "upstream_ms": _ms(record.upstream_s),
    }
