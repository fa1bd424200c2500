"""The response cache as a stage: before the upstream call it keys a cacheable request and
answers a hit (held against the budgets at its known price, replayed as SSE for a stream);
after, it keeps a miss's answer with what it cost and would have cost at list price."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.accounting import Charge
from gateway.cache.key import cache_directive, cache_key, cacheable, namespace_for, storable
from gateway.cache.store import CachedResponse
from gateway.stages.base import Context, Stage
from gateway.streaming import send_sse
from gateway.types import Usage, nano_to_usd_str

_REPLAYABLE = frozenset({"chat/completions", "completions"})


class Cache(Stage):
    name = "cache"

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        config, record, plan = ctx.config, ctx.record, ctx.plan
        assert record.principal is not None
        name, endpoint = ctx.body["model"], record.endpoint
        policy = config.cache.policy_for(name)
        directive = cache_directive(ctx.request.headers)
        if not (
            config.cache.enabled
            and cacheable(plan.body, policy, directive, endpoint)
            and not (record.stream and endpoint not in _REPLAYABLE)
        ):
            record.cache = "bypass"
            metrics = self.services.metrics
            metrics.child(metrics.cache_lookups, "bypass", "none").inc()
            return None
        namespace = namespace_for(record.principal, policy)
        variant = plan.decision.model if plan.decision else ""
        plan.cache_key = cache_key(endpoint, plan.body, namespace, variant)
        plan.cache_ttl_s = config.cache.ttl_for(policy)
        plan.refresh = directive == "refresh"
        record.cache = "miss"
        if plan.refresh:
            return None
        hit, _ = await self.services.cache.lookup(plan.cache_key)
        if hit is None:
            return None
        return await self._serve_hit(ctx, hit)

    async def _serve_hit(self, ctx: Context, hit: CachedResponse) -> web.StreamResponse:
        record = ctx.record
        record.cache = "hit"
        cost = hit.hit_cost_nano(ctx.config.cache.hit_cost_fraction)
        # A hit is held against the budgets like any request, at its known price.
        await self.services.accountant.hold(record, ctx.config, cost)
        record.charges.append(_hit_charge(hit, cost))
        headers = ctx.response_headers(settled=True)
        headers["x-sg-model"] = hit.served_model
        if not record.stream:
            headers["x-sg-cost-usd"] = nano_to_usd_str(cost)
            return web.Response(
                body=hit.body, headers={"Content-Type": hit.content_type, **headers}
            )
        return await send_sse(ctx.request, headers, orjson.loads(hit.body), ctx.plan.body, record)

    def after(self, ctx: Context) -> None:
        if not ctx.planned or ctx.plan.cache_key is None:
            return
        answer = ctx.answer
        if answer is not None and storable(ctx.record.endpoint, answer.json):
            self._store(ctx, answer.body, answer.content_type)
        elif answer is None and ctx.completion is not None:
            self._store(ctx, orjson.dumps(ctx.completion), "application/json")

    def _store(self, ctx: Context, body: bytes, content_type: str) -> None:
        """Keep a miss's answer, with what it cost and would have cost at list price. The
        answer's own charge is the request's last (a cascade's earlier attempts come first)."""
        plan, record = ctx.plan, ctx.record
        assert plan.cache_key is not None
        answered = record.charges[-1]
        cost = record.cost_nano
        listed = record.list_cost_nano or cost
        self.services.cache.put_soon(
            plan.cache_key,
            CachedResponse.of(
                body,
                answered.usage,
                content_type=content_type,
                served_model=answered.served_model,
                deployment=answered.deployment,
                cost_nano=cost,
                list_cost_nano=listed,
                created_at=self.services.clock(),
            ),
            plan.cache_ttl_s,
        )


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
