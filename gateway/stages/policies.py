"""Governance as a stage: the `policies:` rules judge the planned request (the requested model
and the one a tier routed it to, its tags, its size) before the cache, the budgets and the
upstream; a refusal is a 403, a warning a response header (`gateway.policies.enforce`)."""

from __future__ import annotations

from aiohttp import web

from gateway.policies.approvals import ApprovalStore
from gateway.policies.enforce import WARNING_HEADER, PolicyEnforcer
from gateway.stages.base import Context, Services, Stage


class Policies(Stage):
    name = "policies"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        store = services.store
        approvals = None if store is None else ApprovalStore(store, services.clock)
        self.enforcer = PolicyEnforcer(approvals, services.metrics)

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        warning, over = self.enforcer.judge(ctx.config, ctx.record, ctx.plan)
        if over:  # over an approval limit: the store says whether it is approved
            await self.enforcer.ask(ctx.config, ctx.record, ctx.plan, over)
        if warning is not None:
            ctx.headers[WARNING_HEADER] = warning
        return None
