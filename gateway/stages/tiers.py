"""Model tiers: a request naming a tier (such as `auto`) is routed to one of its candidate
models by the tier's rules (prompt size, quality hint, team, budget state, tools, ...); the
decision is explained in `x-sg-route` and counted."""

from __future__ import annotations

from aiohttp import web

from gateway.pricing.tokens import count_prompt
from gateway.routing.tiers import decide, explain, features
from gateway.stages.base import Context, Stage


class Tiers(Stage):
    name = "tiers"

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        name, record, config = ctx.body["model"], ctx.record, ctx.config
        tier = config.tiers.get(name)
        if tier is None:
            return None
        assert record.principal is not None
        ctx.prompt_tokens = count_prompt(ctx.body, record.endpoint, tier.default)
        decision = decide(
            tier,
            features(ctx.body, record.endpoint, ctx.prompt_tokens, ctx.request.headers),
            record.principal,
            self.services.accountant.used_pct(record.principal),
        )
        ctx.decision = decision
        ctx.route = config.models[decision.model]
        ctx.listed = config.models.get(name) or config.models[tier.candidates[-1]]
        record.route_text = explain(decision)
        metrics = self.services.metrics
        metrics.child(metrics.tier_decisions, tier.name, decision.rule_name, ctx.route.name).inc()
        return None
