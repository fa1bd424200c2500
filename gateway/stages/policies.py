"""Governance as a stage: the `policies:` rules judge the planned request (the requested model
and the one a tier routed it to, its tags, its size) before the cache, the budgets and the
upstream; a refusal is a 403, a warning a response header (`gateway.policies.enforce`)."""

from __future__ import annotations

from collections.abc import Awaitable

from gateway.config.policies import ApprovalPolicy
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

    def before(self, ctx: Context) -> Awaitable[None] | None:
        warning, over = self.enforcer.judge(ctx.config, ctx.record, ctx.plan)
        if over:  # over an approval limit: the store says whether it is approved
            return self._approved(ctx, over, warning)
        if warning is not None:
            ctx.headers[WARNING_HEADER] = warning
        return None

    async def _approved(
        self, ctx: Context, over: list[tuple[ApprovalPolicy, str]], warning: str | None
    ) -> None:
        await self.enforcer.ask(ctx.config, ctx.record, ctx.plan, over)
        if warning is not None:
            ctx.headers[WARNING_HEADER] = warning
