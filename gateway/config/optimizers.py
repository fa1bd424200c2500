"""Compile the cost optimizers: model tiers (rules and cascades), the response cache and its
per-route policies, in-flight coalescing and embeddings batching.

Cross-references checked here: tier candidates are defined models (never tiers); a tier named
after a model tiers that model; rule names are unique within their tier and every rule can
fire; `team` conditions name defined teams; cache routes name a model or a tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from gateway.config.checks import Problem, did_you_mean
from gateway.config.model import (
    BatchingConfig,
    CacheConfig,
    CacheRoutePolicy,
    CascadeConfig,
    TierCondition,
    TierConfig,
    TierRule,
)
from gateway.config.schema import RootSpec, TierConditionSpec, TierRuleSpec, TierSpec

MS_PER_S = 1000


class OptimizerCompiler:
    """Records its problems in the list it is given, like the main compiler it works for."""

    def __init__(self, root: RootSpec, problems: list[Problem]) -> None:
        self.root = root
        self.problems = problems

    def tiers(self) -> Mapping[str, TierConfig]:
        tiers: dict[str, TierConfig] = {}
        for name, spec in self.root.tiers.items():
            if spec is None:
                continue  # its problem is recorded; its name still counts as defined
            tier = self.tier(name, spec, f"tiers.{name}")
            if tier is not None:
                tiers[name] = tier
        return MappingProxyType(tiers)

    def tier(self, name: str, spec: TierSpec, path: str) -> TierConfig | None:
        ok = True
        if name in self.root.models and name not in spec.candidates:
            # Clients asking for the model would silently get the tier instead.
            reason = (
                f"tier {name!r} has the name of a model it does not tier: "
                f"list {name!r} in its candidates, or give the tier another name"
            )
            self.problems.append((path, reason))
            ok = False
        for i, candidate in enumerate(spec.candidates):
            ok = self.check_candidate(candidate, f"{path}.candidates[{i}]") and ok
        rules = self.rules(spec.rules, path)
        if not ok or rules is None:
            return None
        cascade = spec.cascade
        return TierConfig(
            name=name,
            candidates=spec.candidates,
            default=spec.default,
            rules=rules,
            cascade=None if cascade is None else CascadeConfig(cascade.checks, cascade.stream),
        )

    def check_candidate(self, model: str, path: str) -> bool:
        if model in self.root.models:
            return True  # also when a tier has its name: candidates always mean models
        if model in self.root.tiers:
            reason = f"{model!r} is a tier: candidates are models (under models), tiers don't nest"
        else:
            reason = _undefined("model", model, self.root.models, "models")
        self.problems.append((path, reason))
        return False

    def rules(self, specs: list[TierRuleSpec | None], path: str) -> tuple[TierRule, ...] | None:
        """The tier's rules, or None if one is broken (its problem is recorded)."""
        rules: list[TierRule] = []
        seen: dict[str, str] = {}
        catch_all: str | None = None  # the first rule without conditions
        before = len(self.problems)
        for i, spec in enumerate(specs):
            rule_path = f"{path}.rules[{i}]"
            if spec is None:
                continue
            if spec.name in seen:
                reason = f"duplicate rule name {spec.name!r} (also {seen[spec.name]})"
                self.problems.append((f"{rule_path}.name", reason))
                continue
            seen[spec.name] = rule_path
            if catch_all is not None:
                reason = (
                    f"never applies: rule {catch_all!r} before it has no conditions, so it "
                    "takes every request (the first rule that matches wins)"
                )
                self.problems.append((rule_path, reason))
            elif spec.when.always():
                catch_all = spec.name
            self.check_teams(spec.when.team, f"{rule_path}.when.team")
            rules.append(TierRule(spec.name, spec.use, _condition(spec.when)))
        if None in specs or len(self.problems) > before:
            return None
        return tuple(rules)

    def check_teams(self, teams: tuple[str, ...], path: str) -> None:
        for i, team in enumerate(teams):
            if team not in self.root.teams:
                where = f"{path}[{i}]" if len(teams) > 1 else path
                self.problems.append((where, _undefined("team", team, self.root.teams, "teams")))

    def cache(self) -> CacheConfig:
        spec = self.root.cache
        routes: dict[str, CacheRoutePolicy] = {}
        for name, route in spec.routes.items():
            if name not in self.root.models and name not in self.root.tiers:
                exposed = [*self.root.models, *self.root.tiers]
                reason = _undefined("model", name, exposed, "models or tiers")
                self.problems.append((f"cache.routes.{name}", reason))
            elif route is not None:
                routes[name] = CacheRoutePolicy(route.mode, route.ttl_s, route.shared)
        return CacheConfig(
            enabled=spec.enabled,
            memory_max_bytes=spec.memory_max_bytes,
            max_entry_bytes=spec.max_entry_bytes,
            use_redis=spec.use_redis,
            redis_max_bytes=spec.redis_max_bytes,
            default_ttl_s=spec.default_ttl_s,
            hit_cost_fraction=spec.hit_cost_fraction,
            routes=MappingProxyType(routes),
        )

    def batching(self) -> BatchingConfig:
        spec = self.root.batching
        return BatchingConfig(
            coalesce=spec.coalesce,
            coalesce_billing=spec.coalesce_billing,
            embeddings_enabled=spec.embeddings.enabled,
            embeddings_window_s=spec.embeddings.window_ms / MS_PER_S,
            embeddings_max_inputs=spec.embeddings.max_inputs,
        )


def _condition(spec: TierConditionSpec) -> TierCondition:
    return TierCondition(
        prompt_tokens_gt=spec.prompt_tokens_gt,
        prompt_tokens_lte=spec.prompt_tokens_lte,
        hint=spec.hint,
        team=spec.team,
        project=spec.project,
        environment=spec.environment,
        budget_used_pct_gte=spec.budget_used_pct_gte,
        has_tools=spec.has_tools,
        has_response_format=spec.has_response_format,
        has_code=spec.has_code,
        messages_gt=spec.messages_gt,
    )


def _undefined(what: str, name: str, defined: Iterable[str], section: str) -> str:
    names = list(defined)
    hint = did_you_mean(name, names) or f" (defined: {', '.join(names) or 'none'})"
    return f"{what} {name!r} is not defined in {section}{hint}"
