"""The request path, top to bottom: parse, authenticate, the stages, the upstream call, respond.

`Pipeline.handle` is the whole of it for the four POST endpoints. Each request reads one config
snapshot (config + the providers built for it) at its start and keeps it to the end, so a reload
never changes the rules under a request in flight. What happens between authentication and the
upstream call (tiers, the plan, the cache, budgets, ...) and the other ways of calling the
upstream (cascade, batching, coalescing) are stages (`gateway/stages/`), run in the order of
`stages.registry.STAGES`. Money is the `Accountant`'s: reserve before the upstream call (the
budgets stage), settle (always) after it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.accounting import Accountant, Record
from gateway.attribution import attribute, revenue_of
from gateway.cache.store import ResponseCache
from gateway.config.model import Config
from gateway.errors import AuthenticationFailed, ClientClosed, GatewayError, ShuttingDown
from gateway.metrics import Metrics
from gateway.providers.base import Provider
from gateway.routing.router import Router
from gateway.stages import registry
from gateway.stages.base import Context, Services
from gateway.stages.upstream import Answer, Upstream
from gateway.store.keys import Keyring
from gateway.streaming import Cutoff, StreamRelay, send_sse
from gateway.types import Principal, nano_to_usd_str
from gateway.validation import parse_body, read_body, validate_body

if TYPE_CHECKING:
    from redis.asyncio import Redis

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Pipeline:
    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        keyring: Keyring,
        router: Router,
        metrics: Metrics,
        accountant: Accountant,
        cache: ResponseCache,
        store: Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = (config, providers)
        self.keyring = keyring
        self.metrics = metrics
        self.accountant = accountant
        self.cutoff = Cutoff()
        self.streams = StreamRelay(router, metrics, self.cutoff)
        self.upstream = Upstream(router, metrics)
        self._id_prefix = "req_" + os.urandom(8).hex()
        self._ids = itertools.count(1)
        services = Services(
            metrics,
            accountant,
            cache,
            self.upstream,
            lambda: self._snapshot,
            self.new_request_id,
            store,
            clock,
        )
        self.stages = registry.build(services)
        # Each point runs only the stages that act there.
        self._before = [s for s in self.stages if s.overrides("before")]
        self._answering = [s for s in self.stages if s.overrides("answer")]
        self._after = [s for s in self.stages if s.overrides("after")]

    def new_request_id(self) -> str:
        """A random prefix per process and a counter: unique across replicas and restarts
        without a getrandom() system call per request (that was ~3 % of the request path)."""
        return f"{self._id_prefix}{next(self._ids):08x}"

    def request_id(self, request: web.Request) -> str:
        given = request.headers.get("x-request-id")
        if given and _REQUEST_ID.match(given):
            return given
        return self.new_request_id()

    def swap(self, config: Config, providers: Mapping[str, Provider]) -> None:
        """Install a new config snapshot; requests already running keep theirs."""
        self._snapshot = (config, providers)
        for stage in self.stages:
            stage.swap(config)

    @property
    def config(self) -> Config:
        return self._snapshot[0]

    async def aclose(self) -> None:
        for stage in self.stages:
            await stage.aclose()

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else ""
        secret = secret or request.headers.get("api-key", "")
        if not secret:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer sk-sg-...' with a spendgate key"
            )
        principal = await self.keyring.resolve(secret)
        if principal is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return principal

    async def handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        record = Record(self.request_id(request), endpoint, time.perf_counter())
        ctx = Context(request, record, *self._snapshot)
        self.metrics.inflight.inc()
        self.accountant.begin()
        task = self.cutoff.enter()
        try:
            raw = await read_body(request)
            ctx.body, ctx.size = parse_body(raw, ctx.config.server.max_body_bytes), len(raw)
            validate_body(endpoint, ctx.body)
            record.principal = attribute(await self.authenticate(request), request.headers)
            record.revenue_nano = revenue_of(request.headers)
            record.model, record.stream = ctx.body["model"], ctx.body.get("stream") is True
            # For the recommendations' signals, hashed after the response.
            record.body, record.body_size = ctx.body, ctx.size
            for stage in self._before:
                waiting = stage.before(ctx)
                if waiting is not None and (reply := await waiting) is not None:
                    return reply
            return await self._upstream(ctx)
        except ClientClosed:  # before anything was sent upstream: nothing to bill
            record.status, record.outcome = ClientClosed.status, "client_closed"
            raise
        except GatewayError as exc:
            record.status, record.outcome, record.error = exc.status, "error", exc.code
            if ctx.headers:
                exc.headers = {**ctx.headers, **exc.headers}
            raise
        except asyncio.CancelledError:
            if self.cutoff.owns():  # the drain deadline of a graceful stop, not the client
                cut = ShuttingDown("the gateway is shutting down; retry the request")
                record.status, record.outcome, record.error = cut.status, "error", cut.code
                raise cut from None
            # The client went away (aiohttp cancels the handler): before its request was
            # accepted nothing was spent; after, what was generated is billed.
            if record.outcome == "ok":
                record.status = 499
                record.outcome = "client_disconnected" if record.principal else "client_closed"
            raise
        finally:
            self.cutoff.leave(task)
            self.metrics.inflight.dec()
            # The stages' `after`, metrics, the access line and the spend events once the
            # response has gone out: aiohttp writes what the handler returns in this same step.
            asyncio.get_running_loop().call_soon(self._finish, ctx)

    async def _upstream(self, ctx: Context) -> web.StreamResponse:
        """The upstream call: a stage's way (cascade, batch, coalesced), else a stream passed
        through as it arrives, else one call through the router."""
        record, plan = ctx.record, ctx.plan
        self.accountant.lull()  # the finished requests are booked while this one waits
        for stage in self._answering:
            answer = await stage.answer(ctx)
            if answer is not None:
                break
        else:
            if record.stream:
                response, ctx.completion = await self.streams.relay(
                    ctx.request, record, plan, ctx.providers, ctx.response_headers()
                )
                return response
            answer = await self.upstream.call(record, plan.route, ctx.providers, plan.body)
            record.charge(answer.deployment, answer.provider, answer.usage, plan.list_price)
        ctx.answer = answer
        return await self._respond(ctx, answer)

    async def _respond(self, ctx: Context, answer: Answer) -> web.StreamResponse:
        record = ctx.record
        headers = ctx.response_headers(settled=True)
        headers["x-sg-model"] = answer.deployment.model
        if not record.stream:
            headers["x-sg-cost-usd"] = nano_to_usd_str(record.cost_nano)
            headers["Content-Type"] = answer.content_type
            return web.Response(body=answer.body, headers=headers)
        # A cascaded stream: the attempts were whole answers; the final one is replayed as SSE.
        return await send_sse(ctx.request, headers, answer.json, ctx.plan.body, record)

    def _finish(self, ctx: Context) -> None:
        try:
            for stage in self._after:
                stage.after(ctx)
        finally:
            self.accountant.finish(ctx.record)
