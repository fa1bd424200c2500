"""Cascades: a tier's cheapest candidate first, escalating while the answer fails a verifiable
check (cut off, empty, invalid JSON). Every attempt is billed; only the answer the client gets
carries a list cost. A cascaded stream's attempts are whole answers; the last is replayed."""

from __future__ import annotations

from typing import Any

from gateway.routing.cascade import run_cascade
from gateway.routing.tiers import explain
from gateway.stages.base import Context, Stage
from gateway.stages.upstream import Answer


class Cascade(Stage):
    name = "cascade"

    async def answer(self, ctx: Context) -> Answer | None:
        plan, record, config = ctx.plan, ctx.record, ctx.config
        if plan.decision is None or not plan.decision.cascade:
            return None
        tier = config.tiers[plan.decision.tier]
        checks = tier.cascade.checks if tier.cascade else ()
        body = {k: v for k, v in plan.body.items() if k not in ("stream", "stream_options")}

        async def attempt(model: str) -> tuple[dict[str, Any], Answer]:
            answer = await self.services.upstream.call(
                record, config.models[model], ctx.providers, body
            )
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
        metrics = self.services.metrics
        for escalation in result.escalations:
            metrics.cascade_escalations.labels(tier.name, escalation.check).inc()
        record.route_text = explain(plan.decision, result.model, result.escalations)
        plan.route = record.route = config.models[result.model]
        return result.metas[-1]
