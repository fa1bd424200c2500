"""Enforce the governance policies on one planned request, before any money is held.

In order: model blocks (the requested model, and the model a tier routed it to), required tags
(block, or a warning the response carries in `x-sg-policy-warning`), then approvals above a
size (worst-case cost as budgets reserve it, output tokens, `n`, prompt tokens): a request over
a limit uses its principal's approval for that model, or asks for one (403
`approval_required` with the approval's id). Every action is counted in
`sg_policy_decisions_total{policy,action}` and written on the access line (`Record.policy`).
No I/O unless an approval limit is passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from gateway.accounting import Record, output_cap, worst_case
from gateway.config.model import Config, ModelRoute
from gateway.config.policies import (
    ApprovalPolicy,
    ModelPolicy,
    PoliciesConfig,
    Size,
    TagPolicy,
)
from gateway.errors import ApprovalRequired, PermissionDenied, ServiceUnavailable
from gateway.metrics import Metrics
from gateway.plan import Plan
from gateway.policies.approvals import ApprovalStore
from gateway.pricing.tokens import count_prompt
from gateway.types import Principal

log = logging.getLogger("spendgate.policies")

WARNING_HEADER = "x-sg-policy-warning"
_STORE_ERRORS = (RedisError, OSError, TimeoutError)


class PolicyEnforcer:
    def __init__(self, approvals: ApprovalStore | None, metrics: Metrics) -> None:
        """`approvals`: None without a store (a pipeline built without one): a request over
        an approval limit is then treated as when the store is unreachable."""
        self.approvals = approvals
        self.metrics = metrics
        self._known: dict[tuple[int, str, str], _Verdict] = {}

    async def ask(
        self, config: Config, record: Record, plan: Plan, over: list[tuple[ApprovalPolicy, str]]
    ) -> None:
        """For each approval limit the request is over (`judge`), its principal's approval
        lets it through, or it is refused (403) asking for one."""
        assert record.principal is not None
        for policy, reason in over:
            await self._approval(config, record, plan, policy, record.principal, reason)

    def judge(
        self, config: Config, record: Record, plan: Plan
    ) -> tuple[str | None, list[tuple[ApprovalPolicy, str]]]:
        """Without I/O: raise the 403 of a model or tag policy that refuses the request; else
        (the warning about missing tags, the approval limits it is over and why)."""
        policies = config.policies
        if not policies.enabled:
            return None, []
        p, model = record.principal, record.model
        assert p is not None and model is not None
        verdict = self._verdict(policies, p, model, plan.route)
        within = not verdict.approvals or _within(record, plan, verdict)
        if verdict.passes and within:
            return _PASSED  # the common case: nothing to say, nothing allocated
        if verdict.blocked is not None:
            model_policy, blocked = verdict.blocked
            self._decided(record, model_policy.name, "block")
            raise PermissionDenied(_block_message(model_policy, blocked, model), code=_CODE)
        warnings = []
        for tag_policy, missing in verdict.untagged:
            self._decided(record, tag_policy.name, tag_policy.action)
            if tag_policy.action == "block":
                raise PermissionDenied(_tags_message(tag_policy, missing), code=_CODE)
            warnings.append(f"{tag_policy.name}: missing {', '.join(missing)}")
        over = [] if within else _over(record, plan, verdict)
        return "; ".join(warnings) or None, over

    def _verdict(
        self, policies: PoliciesConfig, p: Principal, model: str, route: ModelRoute
    ) -> _Verdict:
        """What the policies say of `p` asking for `model` (served by `route`) whatever the
        request's size: the same for each of a key's requests to a model, so kept (by the
        principal's, the policies' and the route's identity: a reload or a new principal
        judges again)."""
        known = self._known.get((id(p), model, route.name))
        if (
            known is not None
            and known.principal is p
            and known.policies is policies
            and known.route is route
        ):
            return known
        blocked = None
        for model_policy in policies.models:
            name = model_policy.blocks(p, (model, route.name))
            if name is not None:
                blocked = (model_policy, name)
                break
        untagged = tuple((t, m) for t in policies.tags if (m := t.missing(p)))
        approvals = tuple(a for a in policies.approvals if a.covers(p, model))
        passes = blocked is None and not untagged
        bounds = _bounds(approvals, route)
        verdict = _Verdict(p, policies, route, blocked, untagged, approvals, passes, *bounds)
        if len(self._known) >= _MAX_KNOWN:
            self._known.clear()
        self._known[(id(p), model, route.name)] = verdict
        return verdict

    async def _approval(
        self,
        config: Config,
        record: Record,
        plan: Plan,
        policy: ApprovalPolicy,
        p: Principal,
        reason: str,
    ) -> None:
        """A request over an approval limit (`reason`): its principal's approval for the
        model lets it through, else it asks for one."""
        model = record.model
        assert model is not None
        size = _size(record.endpoint, plan, plan.prompt_tokens or plan.prompt_bound, True)
        cost = size.cost_nano
        try:
            if self.approvals is None:
                raise ConnectionError("no store to keep approvals in")
            verdict = await self.approvals.ask(
                p, model, policy.name, reason, cost, config.policies.approval_ttl_s
            )
        except _STORE_ERRORS as exc:
            self._decided(record, policy.name, "unavailable")
            if config.store.on_unavailable == "open":
                log.warning("approval of %s not checked, the store is unreachable: %r", model, exc)
                return
            raise ServiceUnavailable(
                "the store is unreachable, so approvals cannot be checked; retry shortly"
            ) from exc
        record.approval_id = verdict.id
        if verdict.status == "approved":
            self._decided(record, policy.name, "approved")
            return
        if verdict.status == "denied":
            self._decided(record, policy.name, "denied")
            raise ApprovalRequired(
                f"policy '{policy.name}': an admin denied approval {verdict.id} for this key's "
                f"requests to '{model}' over its limit ({reason})",
                verdict.id,
                code="approval_denied",
            )
        self._decided(record, policy.name, "approval_required")
        raise ApprovalRequired(
            f"policy '{policy.name}' requires an admin's approval: {reason}. Approval "
            f"{verdict.id} is pending; once an admin approves it (`spendgate approvals approve "
            f"{verdict.id}`), this key's requests to '{model}' proceed",
            verdict.id,
        )

    def _decided(self, record: Record, policy: str, action: str) -> None:
        self.metrics.child(self.metrics.policy_decisions, policy, action).inc()
        entry = f"{policy}={action}"
        record.policy = entry if record.policy is None else f"{record.policy},{entry}"


_CODE = "policy_violation"
_MAX_KNOWN = 10_000  # verdicts kept; more are forgotten at once


@dataclass(frozen=True, slots=True)
class _Verdict:
    principal: Principal
    policies: PoliciesConfig
    route: ModelRoute  # the model that serves the request
    blocked: tuple[ModelPolicy, str] | None  # the policy that blocks, and the model it names
    untagged: tuple[tuple[TagPolicy, tuple[str, ...]], ...]  # policies whose tags are missing
    approvals: tuple[ApprovalPolicy, ...]  # approval limits that apply
    passes: bool  # not blocked, and no tags missing
    priced: bool  # one of them limits the worst-case cost
    # The tightest of the approval limits, for a request well within all of them (`_within`):
    # output tokens, n, prompt tokens, and the cost in nano-USD per 1M tokens at the route's
    # dearest input and output prices.
    max_output: int
    max_n: int
    max_prompt: int
    max_cost_per_m: int
    input_per_m: int
    output_per_m: int


_NO_LIMIT = 2**62
_PASSED: tuple[None, list[tuple[ApprovalPolicy, str]]] = (None, [])  # never appended to


def _bounds(
    approvals: tuple[ApprovalPolicy, ...], route: ModelRoute
) -> tuple[bool, int, int, int, int, int, int]:
    def tightest(limits: list[int | None]) -> int:
        return min((x for x in limits if x is not None), default=_NO_LIMIT)

    costs = [a.max_cost_nano for a in approvals]
    prices = [d.price for d in route.deployments]
    return (
        any(c is not None for c in costs),
        tightest([a.max_tokens for a in approvals]),
        tightest([a.max_n for a in approvals]),
        tightest([a.max_prompt_tokens for a in approvals]),
        min(tightest(costs) * 1_000_000, _NO_LIMIT),
        max((p.dearest_input_per_m for p in prices), default=0),
        max((p.dearest_output_per_m for p in prices), default=0),
    )


def _within(record: Record, plan: Plan, verdict: _Verdict) -> bool:
    """The request is within every approval limit that applies by a bound that needs no
    policy by policy check: its output cap, `n` and prompt bound under the tightest limits,
    and its cost at the route's dearest input and output prices (an upper bound of the
    worst case) under the tightest cost limit."""
    body = plan.body
    n = body.get("n")
    n = n if isinstance(n, int) else 1
    output = output_cap(body)
    prompt = plan.prompt_tokens or plan.prompt_bound
    return (
        output <= verdict.max_output
        and n <= verdict.max_n
        and prompt <= verdict.max_prompt
        and prompt * verdict.input_per_m + output * n * verdict.output_per_m
        <= verdict.max_cost_per_m
    )


def _over(record: Record, plan: Plan, verdict: _Verdict) -> list[tuple[ApprovalPolicy, str]]:
    """The approval limits the request is over, each with which of its limits, in words."""
    size = _size(record.endpoint, plan, plan.prompt_tokens or plan.prompt_bound, verdict.priced)
    over = []
    for policy in verdict.approvals:
        reason = policy.exceeded(size)
        if reason is not None and plan.prompt_tokens is None and policy.needs_prompt_tokens:
            # Over with the body's size as the prompt bound: the exact count decides.
            plan.prompt_tokens = count_prompt(
                plan.body, record.endpoint, plan.route.deployments[0].model
            )
            size = _size(record.endpoint, plan, plan.prompt_tokens, verdict.priced)
            reason = policy.exceeded(size)
        if reason is not None:
            over.append((policy, reason))
    return over


def _size(endpoint: str, plan: Plan, prompt_tokens: int, priced: bool) -> Size:
    """What the request asks for; its worst-case cost only when a limit needs it (`priced`)."""
    body: dict[str, Any] = plan.body
    n = body.get("n")
    output = output_cap(body)
    cost = worst_case(plan.route, body, prompt_tokens, endpoint)[0] if priced else 0
    return Size(cost, output, n if isinstance(n, int) else 1, prompt_tokens)


def _block_message(policy: ModelPolicy, blocked: str, requested: str) -> str:
    routed = f" (where tier '{requested}' routed it)" if blocked != requested else ""
    message = (
        f"policy '{policy.name}' blocks model '{blocked}'{routed} for {policy.scope.describe()}"
    )
    return f"{message}: {policy.reason}" if policy.reason else message


def _tags_message(policy: TagPolicy, missing: tuple[str, ...]) -> str:
    return (
        f"policy '{policy.name}' requires {', '.join(missing)} on requests of "
        f"{policy.scope.describe()}: set them on the key, or send x-sg-project / x-sg-env / "
        "x-sg-workload / x-sg-tags: key=value"
    )
