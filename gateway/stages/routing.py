"""The plan: the model that serves the request (a tier's choice, or the exposed model named),
its prompt caps, an output cap when the request sets none (so the worst case is known), and the
prices its savings are measured against. No I/O, no money yet."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import ModelNotFound
from gateway.plan import Plan, with_token_cap
from gateway.pricing.tokens import cheap_upper_bound, count_prompt
from gateway.routing.caps import check_caps, default_output_cap
from gateway.stages.base import Context, Stage


class Routing(Stage):
    name = "routing"

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        config, record = ctx.config, ctx.record
        name, endpoint = ctx.body["model"], record.endpoint
        route, listed = ctx.route, ctx.listed
        if route is None or listed is None:
            found = config.models.get(name)
            if found is None:
                raise ModelNotFound(
                    f"model '{name}' does not exist or is not served by this "
                    "gateway; GET /v1/models lists the models",
                    param="model",
                )
            route = listed = found
        record.route = route
        prompt_tokens = ctx.prompt_tokens
        if route.max_prompt_tokens is not None and prompt_tokens is None:
            prompt_tokens = count_prompt(ctx.body, endpoint, route.deployments[0].model)
        check_caps(route, endpoint, ctx.body, prompt_tokens)
        body = with_token_cap(
            endpoint, ctx.body, default_output_cap(route, config.server.default_max_tokens)
        )
        ctx.plan = Plan(
            body,
            route,
            listed.deployments[0].price,
            prompt_tokens,
            cheap_upper_bound(ctx.size),
            ctx.decision,
        )
        return None
