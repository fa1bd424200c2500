"""The request path, top to bottom: parse, authenticate, plan, cache, reserve, call, respond.

`Pipeline.handle` is the whole of it for the four POST endpoints. Each request reads one config
snapshot (config + the providers built for it) at its start and keeps it to the end, so a reload
never changes the rules under a request in flight. Money is the `Accountant`'s: reserve before
the upstream call, settle (always) after it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.accounting import Accountant, Charge, Record
from gateway.attribution import attribute, revenue_of
from gateway.batching.coalesce import Coalescer, coalesced_cost_nano
from gateway.batching.embeddings import EmbeddingBatcher, group_key
from gateway.budgets.messages import remaining_headers
from gateway.cache.key import cache_directive, cache_key, cacheable, namespace_for, storable
from gateway.cache.store import CachedResponse, ResponseCache
from gateway.config.model import Config, Deployment, ModelRoute
from gateway.errors import (
    AuthenticationFailed,
    ClientClosed,
    GatewayError,
    ModelNotFound,
    ShuttingDown,
)
from gateway.metrics import Metrics
from gateway.plan import Plan, with_token_cap
from gateway.pricing.cost import usage_from_openai
from gateway.pricing.tokens import cheap_upper_bound, count_prompt, estimate_usage
from gateway.providers.base import Provider, UpstreamCall
from gateway.routing.caps import check_caps, default_output_cap
from gateway.routing.cascade import run_cascade
from gateway.routing.router import Router
from gateway.routing.tiers import decide, explain, features
from gateway.sse import message_text
from gateway.store.keys import Keyring
from gateway.streaming import Cutoff, StreamRelay, send_sse
from gateway.types import Principal, Usage, nano_to_usd_str
from gateway.validation import parse_body, read_body, validate_body

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REPLAYABLE = frozenset({"chat/completions", "completions"})


@dataclass(slots=True)
class Answer:
    """A whole (non-streaming) upstream answer."""

    body: bytes
    content_type: str
    json: dict[str, Any]
    deployment: Deployment
    provider: str
    usage: Usage


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
    ) -> None:
        self._snapshot = (config, providers)
        self.keyring = keyring
        self.router = router
        self.metrics = metrics
        self.accountant = accountant
        self.cache = cache
        self.cutoff = Cutoff()
        self.streams = StreamRelay(router, metrics, self.cutoff)
        self._id_prefix = "req_" + os.urandom(8).hex()
        self._ids = itertools.count(1)
        self.coalescer: Coalescer[Answer] = Coalescer()
        self.batcher: EmbeddingBatcher[tuple[Deployment, str]] = EmbeddingBatcher(
            config.batching.embeddings_window_s,
            config.batching.embeddings_max_inputs,
            self._embed_batch,
            metrics=metrics,
        )

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
        self.batcher.window_s = config.batching.embeddings_window_s
        self.batcher.max_inputs = max(1, config.batching.embeddings_max_inputs)

    @property
    def config(self) -> Config:
        return self._snapshot[0]

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.coalescer.aclose()

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
        config, providers = self._snapshot
        record = Record(self.request_id(request), endpoint, time.perf_counter())
        self.metrics.inflight.inc()
        self.accountant.begin()
        task = self.cutoff.enter()
        try:
            raw = await read_body(request)
            body = parse_body(raw, config.server.max_body_bytes)
            validate_body(endpoint, body)
            record.principal = attribute(await self.authenticate(request), request.headers)
            record.revenue_nano = revenue_of(request.headers)
            record.model, record.stream = body["model"], body.get("stream") is True
            plan = self._plan(config, record, body, request.headers, len(raw))
            if plan.cache_key is not None and not plan.refresh:
                hit, _ = await self.cache.lookup(plan.cache_key)
                if hit is not None:
                    return await self._serve_hit(request, record, plan, hit, config)
            await self._reserve(config, record, plan)
            if record.stream and not (plan.decision and plan.decision.cascade):
                return await self._stream(request, record, plan, providers)
            answer = await self._answer(config, record, plan, providers)
            return await self._respond(request, record, plan, answer)
        except ClientClosed:  # before anything was sent upstream: nothing to bill
            record.status, record.outcome = ClientClosed.status, "client_closed"
            raise
        except GatewayError as exc:
            record.status, record.outcome, record.error = exc.status, "error", exc.code
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
            # Metrics, the access line and the spend events once the response has gone out:
            # aiohttp writes what the handler returns in this same step of the loop.
            asyncio.get_running_loop().call_soon(self.accountant.finish, record)

    def _plan(
        self,
        config: Config,
        record: Record,
        body: dict[str, Any],
        headers: Mapping[str, str],
        size: int,
    ) -> Plan:
        """Tier decision, prompt caps, output cap and cache key: no I/O, no money yet."""
        assert record.principal is not None
        name, endpoint = body["model"], record.endpoint
        tier = config.tiers.get(name)
        prompt_tokens = None
        decision = None
        if tier is not None:
            prompt_tokens = count_prompt(body, endpoint, tier.default)
            decision = decide(
                tier,
                features(body, endpoint, prompt_tokens, headers),
                record.principal,
                self.accountant.used_pct(record.principal),
            )
            route = config.models[decision.model]
            listed = config.models.get(name) or config.models[tier.candidates[-1]]
            record.route_text = explain(decision)
            self.metrics.child(
                self.metrics.tier_decisions, tier.name, decision.rule_name, route.name
            ).inc()
        else:
            route = config.models.get(name)  # type: ignore[assignment]
            if route is None:
                raise ModelNotFound(
                    f"model '{name}' does not exist or is not served by this "
                    "gateway; GET /v1/models lists the models",
                    param="model",
                )
            listed = route
        record.route = route
        if route.max_prompt_tokens is not None and prompt_tokens is None:
            prompt_tokens = count_prompt(body, endpoint, route.deployments[0].model)
        check_caps(route, endpoint, body, prompt_tokens)
        body = with_token_cap(
            endpoint, body, default_output_cap(route, config.server.default_max_tokens)
        )
        bound = cheap_upper_bound(size)
        plan = Plan(body, route, listed.deployments[0].price, prompt_tokens, bound, decision)
        policy = config.cache.policy_for(name)
        directive = cache_directive(headers)
        if (
            config.cache.enabled
            and cacheable(body, policy, directive, endpoint)
            and not (record.stream and endpoint not in _REPLAYABLE)
        ):
            namespace = namespace_for(record.principal, policy)
            variant = decision.model if decision else ""
            plan.cache_key = cache_key(endpoint, body, namespace, variant)
            plan.cache_ttl_s = config.cache.ttl_for(policy)
            plan.refresh = directive == "refresh"
            record.cache = "miss"
        else:
            record.cache = "bypass"
            self.metrics.child(self.metrics.cache_lookups, "bypass", "none").inc()
        return plan

    async def _reserve(self, config: Config, record: Record, plan: Plan) -> None:
        """Hold the worst case; a `downgrade` budget switches the plan to the cheaper model."""
        assert record.principal is not None
        if plan.prompt_tokens is None:
            # Far from every limit a lease covers the request with its body's size as the prompt
            # bound, which spares tokenizing it; nearer, the exact count decides.
            if self.accountant.reserve_locally(record, plan.route, plan.body, plan.prompt_bound):
                return
            plan.prompt_tokens = count_prompt(
                plan.body, record.endpoint, plan.route.deployments[0].model
            )
        refused = await self.accountant.reserve(
            record, config, plan.route, plan.body, plan.prompt_tokens or 0
        )
        if refused is None:
            return
        assert refused.exceeded is not None and refused.exceeded.downgrade_to is not None
        target, budget = refused.exceeded.downgrade_to, refused.exceeded.name
        self.metrics.budget_refusals.labels(record.principal.team, budget, "downgrade").inc()
        plan.route = record.route = config.models[target]
        plan.decision = None  # a downgraded request does not cascade back up
        record.route_text = f"budget={budget}; downgrade; model={target}"
        record.optimization = "downgrade"
        plan.cache_key = None
        await self.accountant.reserve(
            record, config, plan.route, plan.body, plan.prompt_tokens or 0, downgrade=False
        )

    async def _serve_hit(
        self, request: web.Request, record: Record, plan: Plan, hit: CachedResponse, config: Config
    ) -> web.StreamResponse:
        record.cache = "hit"
        cost = hit.hit_cost_nano(config.cache.hit_cost_fraction)
        # A hit is held against the budgets like any request, at its known price.
        await self.accountant.hold(record, config, cost)
        record.charges.append(_hit_charge(hit, cost))
        headers = self._headers(record, settled=True)
        headers["x-sg-model"] = hit.served_model
        if not record.stream:
            headers["x-sg-cost-usd"] = nano_to_usd_str(cost)
            return web.Response(
                body=hit.body, headers={"Content-Type": hit.content_type, **headers}
            )
        return await send_sse(request, headers, orjson.loads(hit.body), plan.body, record)

    async def _answer(
        self, config: Config, record: Record, plan: Plan, providers: Mapping[str, Provider]
    ) -> Answer:
        """A whole answer, by the cheapest means the config allows."""
        if plan.decision is not None and plan.decision.cascade:
            answer = await self._cascade(config, record, plan, providers)
        elif record.endpoint == "embeddings" and config.batching.embeddings_enabled:
            answer = await self._batched_embedding(record, plan)
        elif plan.cache_key is not None and config.batching.coalesce:
            answer = await self._coalesced(config, record, plan, providers)
        else:
            answer = await self._call(record, plan.route, providers, plan.body)
            record.charge(answer.deployment, answer.provider, answer.usage, plan.list_price)
        if plan.cache_key is not None and storable(record.endpoint, answer.json):
            self._store(plan, record, answer.body, answer.content_type)
        return answer

    async def _respond(
        self, request: web.Request, record: Record, plan: Plan, answer: Answer
    ) -> web.StreamResponse:
        headers = self._headers(record, settled=True)
        headers["x-sg-model"] = answer.deployment.model
        if not record.stream:
            headers["x-sg-cost-usd"] = nano_to_usd_str(record.cost_nano)
            return web.Response(
                body=answer.body, headers={"Content-Type": answer.content_type, **headers}
            )
        # A cascaded stream: the attempts were whole answers; the final one is replayed as SSE.
        return await send_sse(request, headers, answer.json, plan.body, record)

    async def _call(
        self,
        record: Record,
        route: ModelRoute,
        providers: Mapping[str, Provider],
        body: dict[str, Any],
    ) -> Answer:
        """One non-streaming upstream call through the router (retries, fallbacks)."""
        started = time.perf_counter()
        result, deployment, attempts = await self.router.run(
            route,
            providers,
            lambda d, p: p.send(
                UpstreamCall(record.endpoint, {**body, "model": d.model}, False, record.request_id)
            ),
        )
        self.router.done(deployment)
        record.attempts += attempts
        record.upstream_s += time.perf_counter() - started
        provider = providers[deployment.provider].config.name
        self.metrics.child(self.metrics.upstream_ttfb_seconds, provider, deployment.model).observe(
            result.ttfb_s
        )
        try:
            answer = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        usage = answer.get("usage")
        if isinstance(usage, dict):
            counted = usage_from_openai(usage)
        else:
            counted = estimate_usage(body, record.endpoint, deployment.model, message_text(answer))
        return Answer(result.body, result.content_type, answer, deployment, provider, counted)

    async def _coalesced(
        self, config: Config, record: Record, plan: Plan, providers: Mapping[str, Provider]
    ) -> Answer:
        """Identical requests in flight at once share one upstream call."""
        assert plan.cache_key is not None
        shared = await self.coalescer.run(
            plan.cache_key, lambda: self._call(record, plan.route, providers, plan.body)
        )
        answer = shared.result
        charge = record.charge(answer.deployment, answer.provider, answer.usage, plan.list_price)
        full = charge.cost_nano
        charge.cost_nano = coalesced_cost_nano(
            full, shared.is_leader, shared.group_size, config.batching.coalesce_billing
        )
        if not shared.is_leader:
            charge.optimization = "coalescing"
            charge.list_cost_nano = max(charge.list_cost_nano, full)
            self.metrics.child(self.metrics.coalesced, plan.route.name).inc()
        return answer

    async def _cascade(
        self, config: Config, record: Record, plan: Plan, providers: Mapping[str, Provider]
    ) -> Answer:
        """Cheapest candidate first; escalate while the answer fails a verifiable check.
        Every attempt is billed; only the answer the client gets carries a list cost."""
        assert plan.decision is not None
        tier = config.tiers[plan.decision.tier]
        checks = tier.cascade.checks if tier.cascade else ()
        body = {k: v for k, v in plan.body.items() if k not in ("stream", "stream_options")}

        async def attempt(model: str) -> tuple[dict[str, Any], Answer]:
            answer = await self._call(record, config.models[model], providers, body)
            return answer.json, answer

        result = await run_cascade(plan.decision.cascade, attempt, checks, body)
        for meta in result.metas:
            final = meta is result.metas[-1]
            charge = record.charge(
                meta.deployment,
                meta.provider,
                meta.usage,
                plan.list_price,
                optimization="cascade" if final else None,
            )
            if not final:
                charge.list_cost_nano = 0
        for escalation in result.escalations:
            self.metrics.cascade_escalations.labels(tier.name, escalation.check).inc()
        record.route_text = explain(plan.decision, result.model, result.escalations)
        plan.route = record.route = config.models[result.model]
        return result.metas[-1]

    async def _batched_embedding(self, record: Record, plan: Plan) -> Answer:
        """Concurrent embedding requests share one upstream call; each pays its own tokens."""
        share = await self.batcher.submit(group_key(plan.body), plan.body)
        deployment, provider = share.meta
        if share.batch_requests > 1:
            self.metrics.embedding_batch_requests.labels(plan.route.name).observe(
                share.batch_requests
            )
        usage = Usage(prompt_tokens=share.usage_share, estimated=share.estimated)
        record.charge(
            deployment,
            provider,
            usage,
            plan.list_price,
            optimization="batching" if share.batch_requests > 1 else None,
        )
        return Answer(
            orjson.dumps(share.response),
            "application/json",
            share.response,
            deployment,
            provider,
            usage,
        )

    async def _embed_batch(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], tuple[Deployment, str]]:
        """The batcher's upstream call: one (merged) embeddings request on today's config."""
        config, providers = self._snapshot
        record = Record(self.new_request_id(), "embeddings", time.perf_counter())
        answer = await self._call(record, config.models[body["model"]], providers, body)
        return answer.json, (answer.deployment, answer.provider)

    def _store(self, plan: Plan, record: Record, body: bytes, content_type: str) -> None:
        """Keep a miss's answer, with what it cost and would have cost at list price. The
        answer's own charge is the request's last (a cascade's earlier attempts come first)."""
        assert plan.cache_key is not None
        answered = record.charges[-1]
        cost = record.cost_nano
        listed = sum(c.list_cost_nano for c in record.charges) or cost
        self.cache.put_soon(
            plan.cache_key,
            CachedResponse.of(
                body,
                answered.usage,
                content_type=content_type,
                served_model=answered.served_model,
                deployment=answered.deployment,
                cost_nano=cost,
                list_cost_nano=listed,
                created_at=time.time(),
            ),
            plan.cache_ttl_s,
        )

    def _headers(self, record: Record, settled: bool = False) -> dict[str, str]:
        """The x-sg-* headers every answer carries but `x-sg-model`, which its sender adds.
        `settled`: the request's charges are final (a whole answer), so the remaining budget
        is shown after its actual cost rather than its worst case."""
        headers = {"x-request-id": record.request_id, "x-sg-cache": record.cache}
        if record.route_text:
            headers["x-sg-route"] = record.route_text
        if record.reservation is not None:
            spent = (record.cost_nano, record.tokens) if settled else None
            headers.update(remaining_headers(record.reservation, spent))
        return headers

    async def _stream(
        self, request: web.Request, record: Record, plan: Plan, providers: Mapping[str, Provider]
    ) -> web.StreamResponse:
        response, completion = await self.streams.relay(
            request, record, plan, providers, self._headers(record)
        )
        if completion is not None:
            self._store(plan, record, orjson.dumps(completion), "application/json")
        return response


def _hit_charge(hit: CachedResponse, cost: int) -> Charge:
    return Charge(
        hit.served_model,
        "cache",
        hit.deployment,
        Usage(),
        cost,
        max(hit.list_cost_nano, cost),
        "cache",
    )
