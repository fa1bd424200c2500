"""Budgets as a stage: hold the request's worst case against every budget that applies
before the upstream call (429 from a `block` budget; a `downgrade` budget switches the plan to
its cheaper model). The settle after the call is the accountant's, for every request."""

from __future__ import annotations

from aiohttp import web

from gateway.pricing.tokens import count_prompt
from gateway.stages.base import Context, Stage


class Budgets(Stage):
    name = "budgets"

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        config, record, plan = ctx.config, ctx.record, ctx.plan
        accountant = self.services.accountant
        assert record.principal is not None
        if plan.prompt_tokens is None:
            # Far from every limit a lease covers the request with its body's size as the prompt
            # bound, which spares tokenizing it; nearer, the exact count decides.
            if accountant.reserve_locally(record, plan.route, plan.body, plan.prompt_bound):
                return None
            plan.prompt_tokens = count_prompt(
                plan.body, record.endpoint, plan.route.deployments[0].model
            )
        refused = await accountant.reserve(
            record, config, plan.route, plan.body, plan.prompt_tokens or 0
        )
        if refused is None:
            return None
        assert refused.exceeded is not None and refused.exceeded.downgrade_to is not None
        target, budget = refused.exceeded.downgrade_to, refused.exceeded.name
        self.services.metrics.budget_refusals.labels(
            record.principal.team, budget, "downgrade"
        ).inc()
        plan.route = record.route = config.models[target]
        plan.decision = None  # a downgraded request does not cascade back up
        record.route_text = f"budget={budget}; downgrade; model={target}"
        record.optimization = "downgrade"
        plan.cache_key = None
        await accountant.reserve(
            record, config, plan.route, plan.body, plan.prompt_tokens or 0, downgrade=False
        )
        return None
