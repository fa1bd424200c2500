"""Coalescing: identical cacheable requests in flight at once share one upstream call; who
pays for it is `batching.coalesce_billing`'s choice, and the followers record the saving."""

from __future__ import annotations

from gateway.batching.coalesce import Coalescer, coalesced_cost_nano
from gateway.stages.base import Context, Services, Stage
from gateway.stages.upstream import Answer


class Coalescing(Stage):
    name = "coalescing"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.coalescer: Coalescer[Answer] = Coalescer()

    async def aclose(self) -> None:
        await self.coalescer.aclose()

    async def answer(self, ctx: Context) -> Answer | None:
        plan, record, config = ctx.plan, ctx.record, ctx.config
        key = plan.cache_key
        if key is None or record.stream or not config.batching.coalesce:
            return None
        upstream = self.services.upstream
        shared = await self.coalescer.run(
            key, lambda: upstream.call(record, plan.route, ctx.providers, plan.body)
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
            self.services.metrics.child(self.services.metrics.coalesced, plan.route.name).inc()
        return answer
