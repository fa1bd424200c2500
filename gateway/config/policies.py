"""The compiled `policies:` section, and the pure decisions it makes about one principal.

Three kinds of governance rule, each with a scope (`when`): model blocks (names, glob
patterns and whole tiers, expanded at compile time into the exposed names they block), approval
above a size (worst-case cost, output tokens, `n`, prompt tokens), and required tags (warn or
block). The request path (`gateway.policies`) and the tagging-compliance report
(`gateway.analytics.tagging`) both decide with these functions, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.types import Principal, nano_to_usd_str

TagAction = Literal["warn", "block"]
TAG_ACTIONS: tuple[TagAction, ...] = ("warn", "block")
# Attribution fields a tag policy may require besides tag keys; "team" is always present.
ATTRIBUTION_FIELDS = ("team", "project", "environment", "workload")
DEFAULT_GRANT_S = 86400.0


@dataclass(frozen=True, slots=True)
class PolicyScope:
    """Which requests a policy governs: every condition that is set must hold (an empty scope
    holds for all). A request without the attribute (no environment, ...) never matches a
    condition on it."""

    teams: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    workloads: frozenset[str] = frozenset()
    tags: tuple[tuple[str, str], ...] = ()  # key=value pairs, all required

    def applies(self, p: Principal) -> bool:
        # On every request for every policy: plain branches, no generator unless tags are set.
        if self.teams and p.team not in self.teams:
            return False
        if self.projects and p.project not in self.projects:
            return False
        if self.environments and p.environment not in self.environments:
            return False
        if self.workloads and p.workload not in self.workloads:
            return False
        return not self.tags or all(p.tags.get(k) == v for k, v in self.tags)

    def describe(self) -> str:
        """The scope in words, for messages: "environment dev, team search"."""
        parts = [
            f"{what} {'/'.join(sorted(values))}"
            for what, values in (
                ("team", self.teams),
                ("project", self.projects),
                ("environment", self.environments),
                ("workload", self.workloads),
            )
            if values
        ]
        parts += [f"tag {k}={v}" for k, v in self.tags]
        return ", ".join(parts) or "every request"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """Refuse the models in `blocked` (exposed model and tier names) within the scope."""

    name: str
    scope: PolicyScope
    blocked: frozenset[str]
    rules: tuple[str, ...]  # as written: names, patterns and "tier <name>", for messages
    reason: str | None = None  # the admin's own explanation, added to the message

    def blocks(self, p: Principal, models: Iterable[str]) -> str | None:
        """The first of `models` (requested, then routed) this policy refuses, if any."""
        if not self.scope.applies(p):
            return None
        return next((m for m in models if m in self.blocked), None)


@dataclass(slots=True)  # one per request over an approval policy: not frozen, cheaper to make
class Size:
    """What one request asks for, as far as approval limits care."""

    cost_nano: int  # worst case: prompt + output cap on the dearest deployment
    output_tokens: int  # max_tokens (or max_completion_tokens / max_output_tokens) per choice
    n: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Requests over any limit need an admin's approval (per principal and model)."""

    name: str
    scope: PolicyScope
    models: frozenset[str] | None  # exposed names it covers; None: every model
    max_cost_nano: int | None = None
    max_tokens: int | None = None
    max_n: int | None = None
    max_prompt_tokens: int | None = None
    grant_s: float = DEFAULT_GRANT_S  # an approval's window when the admin gives none

    def covers(self, p: Principal, model: str) -> bool:
        return (self.models is None or model in self.models) and self.scope.applies(p)

    def exceeded(self, size: Size) -> str | None:
        """Which limit `size` is over, in words; None when it is within all of them."""
        if self.max_cost_nano is not None and size.cost_nano > self.max_cost_nano:
            return (
                f"estimated worst-case cost {_usd(nano_to_usd_str(size.cost_nano))} USD is over "
                f"{_usd(nano_to_usd_str(self.max_cost_nano))} USD"
            )
        if self.max_tokens is not None and size.output_tokens > self.max_tokens:
            return f"max_tokens {size.output_tokens} is over {self.max_tokens}"
        if self.max_n is not None and size.n > self.max_n:
            return f"n {size.n} is over {self.max_n}"
        if self.max_prompt_tokens is not None and size.prompt_tokens > self.max_prompt_tokens:
            return f"prompt of {size.prompt_tokens} tokens is over {self.max_prompt_tokens}"
        return None

    @property
    def needs_prompt_tokens(self) -> bool:
        """Whether a decision needs the prompt's size (its exact count when the cheap bound
        is over a limit)."""
        return self.max_prompt_tokens is not None or self.max_cost_nano is not None


@dataclass(frozen=True, slots=True)
class TagPolicy:
    """Requests that lack any of `require` (attribution fields or tag keys) are warned about
    (a response header) or blocked."""

    name: str
    scope: PolicyScope
    require: tuple[str, ...]
    action: TagAction = "warn"

    def missing(self, p: Principal) -> tuple[str, ...]:
        if not self.scope.applies(p):
            return ()
        return tuple(k for k in self.require if not has_tag(p, k))


def has_tag(p: Principal, key: str) -> bool:
    """Whether the principal names `key`: an attribution field, else a non-empty tag."""
    if key == "team":
        return bool(p.team)
    if key in ATTRIBUTION_FIELDS:
        return bool(getattr(p, key))
    return bool(p.tags.get(key))


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    models: tuple[ModelPolicy, ...] = ()
    approvals: tuple[ApprovalPolicy, ...] = ()
    tags: tuple[TagPolicy, ...] = ()
    # How long an unanswered approval request (or a denial) stands before a new one is asked.
    approval_ttl_s: float = 7 * 86400.0
    # Tag keys the organization uses, beyond those of config keys and budgets: what policies
    # may name (anything else is a typo).
    tag_keys: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)  # policy name -> kind
    enabled: bool = field(init=False)  # any policy at all (read on every request)

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", bool(self.models or self.approvals or self.tags))

    def grant_s(self, policy: str) -> float:
        """How long an approval under `policy` lasts when the admin gives no window (the
        default when the policy is gone from the config)."""
        found = next((a for a in self.approvals if a.name == policy), None)
        return DEFAULT_GRANT_S if found is None else found.grant_s

    def required_tags(self, p: Principal) -> tuple[str, ...]:
        """Every tag key the tag policies that govern `p` require (tagging compliance)."""
        keys: dict[str, None] = {}
        for policy in self.tags:
            if policy.scope.applies(p):
                keys.update(dict.fromkeys(policy.require))
        return tuple(keys)


def _usd(text: str) -> str:
    """'0.250000000' -> '0.25' (an exact decimal, shortest)."""
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole
