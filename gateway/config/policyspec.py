"""The `policies:` section: its YAML shape, and its compilation into `PoliciesConfig`.

Cross-references checked here: policy names are unique across kinds (they label metrics and
approvals); model names are exposed models or tiers, glob patterns match at least one of them,
tiers exist; teams exist; tag keys are known (attribution fields, `policies.tag_keys`, and the
tag keys config keys and tag budgets use), so a typo cannot silently govern nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from gateway.config.checks import (
    Distinct,
    Int,
    ListOf,
    Number,
    OneOf,
    Problem,
    Record,
    Spec,
    Str,
    StrMap,
    Usd,
    checks,
    did_you_mean,
)
from gateway.config.policies import (
    ATTRIBUTION_FIELDS,
    TAG_ACTIONS,
    ApprovalPolicy,
    ModelPolicy,
    PoliciesConfig,
    PolicyScope,
    TagAction,
    TagPolicy,
)

_POLICY_NAME = Str(
    pattern=r"[A-Za-z0-9_.-]{1,64}",
    rule="policy names use only A-Z, a-z, 0-9, _, . and - (at most 64)",
)
_TAG_KEY = Str(pattern=r"[A-Za-z0-9_.:/-]{1,64}", rule="tag keys use only A-Z, a-z, 0-9, _.:/-")
_GLOB = "*?["


S = TypeVar("S", bound="ModelPolicySpec | ApprovalPolicySpec | TagPolicySpec")
T = TypeVar("T")


def _any_of(what: str, item: Str | None = None) -> Distinct[str]:
    return Distinct(item or Str(max_len=200), what=what, single=True)


@dataclass(frozen=True, kw_only=True)
class PolicyWhenSpec(Spec):
    """Which requests the policy governs; every condition given must hold (none: all)."""

    team: tuple[str, ...] = field(default=(), metadata=checks(_any_of("team")))
    project: tuple[str, ...] = field(default=(), metadata=checks(_any_of("project")))
    environment: tuple[str, ...] = field(default=(), metadata=checks(_any_of("environment")))
    workload: tuple[str, ...] = field(default=(), metadata=checks(_any_of("workload")))
    tags: dict[str, str] = field(
        default_factory=dict, metadata=checks(StrMap(_TAG_KEY, Str(max_len=200), max_items=16))
    )


_WHEN = Record(PolicyWhenSpec)


@dataclass(frozen=True, kw_only=True)
class ModelPolicySpec(Spec):
    name: str = field(metadata=checks(_POLICY_NAME))
    when: PolicyWhenSpec = field(default_factory=PolicyWhenSpec, metadata=checks(_WHEN))
    block: tuple[str, ...] = field(default=(), metadata=checks(_any_of("model")))
    block_tiers: tuple[str, ...] = field(default=(), metadata=checks(_any_of("tier")))
    reason: str | None = field(default=None, metadata=checks(Str(max_len=300)))

    def problems(self) -> Iterator[Problem]:
        if not self.block and not self.block_tiers:
            yield "block", "give block (models or patterns), block_tiers, or both"


@dataclass(frozen=True, kw_only=True)
class ApprovalPolicySpec(Spec):
    name: str = field(metadata=checks(_POLICY_NAME))
    when: PolicyWhenSpec = field(default_factory=PolicyWhenSpec, metadata=checks(_WHEN))
    models: tuple[str, ...] = field(default=(), metadata=checks(_any_of("model")))
    max_cost_usd: int | None = field(default=None, metadata=checks(Usd(positive=True)))
    max_tokens: int | None = field(default=None, metadata=checks(Int(min=1)))
    max_n: int | None = field(default=None, metadata=checks(Int(min=1)))
    max_prompt_tokens: int | None = field(default=None, metadata=checks(Int(min=1)))
    grant_s: float = field(
        default=86400.0, metadata=checks(Number(positive=True, max=366 * 86400.0))
    )

    def problems(self) -> Iterator[Problem]:
        limits = (self.max_cost_usd, self.max_tokens, self.max_n, self.max_prompt_tokens)
        if all(limit is None for limit in limits):
            yield (
                "max_cost_usd",
                "give at least one limit: max_cost_usd, max_tokens, max_n or max_prompt_tokens",
            )


@dataclass(frozen=True, kw_only=True)
class TagPolicySpec(Spec):
    name: str = field(metadata=checks(_POLICY_NAME))
    when: PolicyWhenSpec = field(default_factory=PolicyWhenSpec, metadata=checks(_WHEN))
    require: tuple[str, ...] = field(
        metadata=checks(Distinct(_TAG_KEY, what="tag key", single=True))
    )
    action: TagAction = field(default="warn", metadata=checks(OneOf(*TAG_ACTIONS)))


@dataclass(frozen=True, kw_only=True)
class PoliciesSpec(Spec):
    tag_keys: tuple[str, ...] = field(
        default=(), metadata=checks(Distinct(_TAG_KEY, what="tag key", single=True))
    )
    approval_ttl_s: float = field(
        default=7 * 86400.0, metadata=checks(Number(positive=True, max=366 * 86400.0))
    )
    models: list[ModelPolicySpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(ModelPolicySpec)))
    )
    approvals: list[ApprovalPolicySpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(ApprovalPolicySpec)))
    )
    tags: list[TagPolicySpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(TagPolicySpec)))
    )


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What policies may name: exposed models, tiers (-> their candidates), teams, tag keys."""

    models: Sequence[str]
    tiers: Mapping[str, Sequence[str]]
    teams: Sequence[str]
    tag_keys: Sequence[str]


def compile_policies(
    spec: PoliciesSpec, known: Vocabulary, problems: list[Problem]
) -> PoliciesConfig:
    compiler = _PolicyCompiler(known, spec.tag_keys, problems)
    models = compiler.each(spec.models, "models", compiler.model_policy)
    approvals = compiler.each(spec.approvals, "approvals", compiler.approval_policy)
    tags = compiler.each(spec.tags, "tags", compiler.tag_policy)
    return PoliciesConfig(
        models=tuple(models),
        approvals=tuple(approvals),
        tags=tuple(tags),
        approval_ttl_s=spec.approval_ttl_s,
        tag_keys=spec.tag_keys,
        names=MappingProxyType(dict(compiler.names)),
    )


class _PolicyCompiler:
    def __init__(self, known: Vocabulary, tag_keys: Iterable[str], problems: list[Problem]):
        self.known = known
        self.problems = problems
        self.names: dict[str, str] = {}  # policy name -> its path
        self.exposed = sorted({*known.models, *known.tiers})
        self.tag_keys = sorted({*ATTRIBUTION_FIELDS, *known.tag_keys, *tag_keys})

    def each(
        self, specs: list[S | None], kind: str, build: Callable[[S, str], T | None]
    ) -> list[T]:
        built: list[T] = []
        for i, spec in enumerate(specs):
            if spec is None:
                continue  # its problem is recorded
            path = f"policies.{kind}[{i}]"
            name = spec.name
            if name in self.names:
                reason = f"duplicate policy name {name!r} (also {self.names[name]})"
                self.problems.append((f"{path}.name", reason))
                continue
            self.names[name] = path
            policy = build(spec, path)
            if policy is not None:
                built.append(policy)
        return built

    def model_policy(self, spec: ModelPolicySpec, path: str) -> ModelPolicy | None:
        scope = self.scope(spec.when, f"{path}.when")
        blocked = self.models(spec.block, f"{path}.block")
        rules = list(spec.block)
        for i, tier in enumerate(spec.block_tiers):
            if tier not in self.known.tiers:
                self.unknown(f"{path}.block_tiers[{i}]", "tier", tier, list(self.known.tiers))
                blocked = None
            elif blocked is not None:
                blocked |= {tier, *self.known.tiers[tier]}
                rules.append(f"tier {tier}")
        if scope is None or blocked is None:
            return None
        return ModelPolicy(spec.name, scope, frozenset(blocked), tuple(rules), spec.reason)

    def approval_policy(self, spec: ApprovalPolicySpec, path: str) -> ApprovalPolicy | None:
        scope = self.scope(spec.when, f"{path}.when")
        models = self.models(spec.models, f"{path}.models") if spec.models else set()
        if scope is None or models is None:
            return None
        return ApprovalPolicy(
            name=spec.name,
            scope=scope,
            models=frozenset(models) if spec.models else None,
            max_cost_nano=spec.max_cost_usd,
            max_tokens=spec.max_tokens,
            max_n=spec.max_n,
            max_prompt_tokens=spec.max_prompt_tokens,
            grant_s=spec.grant_s,
        )

    def tag_policy(self, spec: TagPolicySpec, path: str) -> TagPolicy | None:
        scope = self.scope(spec.when, f"{path}.when")
        ok = all([self.tag_key(key, f"{path}.require[{i}]") for i, key in enumerate(spec.require)])
        if scope is None or not ok:
            return None
        return TagPolicy(spec.name, scope, spec.require, spec.action)

    def scope(self, when: PolicyWhenSpec, path: str) -> PolicyScope | None:
        ok = True
        for i, team in enumerate(when.team):
            if team not in self.known.teams:
                self.unknown(f"{path}.team[{i}]", "team", team, list(self.known.teams))
                ok = False
        for key in when.tags:
            ok = self.tag_key(key, f"{path}.tags.{key}") and ok
        if not ok:
            return None
        return PolicyScope(
            teams=frozenset(when.team),
            projects=frozenset(when.project),
            environments=frozenset(when.environment),
            workloads=frozenset(when.workload),
            tags=tuple(sorted(when.tags.items())),
        )

    def models(self, written: Iterable[str], path: str) -> set[str] | None:
        """The exposed names that names and glob patterns stand for; None after a problem."""
        names: set[str] = set()
        ok = True
        for i, entry in enumerate(written):
            if any(c in entry for c in _GLOB):
                matched = fnmatch.filter(self.exposed, entry)
                if not matched:
                    reason = (
                        f"pattern {entry!r} matches no model or tier "
                        f"(defined: {', '.join(self.exposed)})"
                    )
                    self.problems.append((f"{path}[{i}]", reason))
                    ok = False
                names.update(matched)
            elif entry in self.exposed:
                names.add(entry)
            else:
                self.unknown(f"{path}[{i}]", "model or tier", entry, self.exposed)
                ok = False
        return names if ok else None

    def tag_key(self, key: str, path: str) -> bool:
        if key in self.tag_keys:
            return True
        hint = did_you_mean(key, self.tag_keys)
        reason = (
            f"unknown tag {key!r}{hint}: known tags are {', '.join(self.tag_keys)} "
            "(declare the organization's tag keys in policies.tag_keys)"
        )
        self.problems.append((path, reason))
        return False

    def unknown(self, path: str, what: str, name: str, defined: list[str]) -> None:
        hint = did_you_mean(name, defined) or f" (defined: {', '.join(defined) or 'none'})"
        self.problems.append((path, f"unknown {what} {name!r}{hint}"))
