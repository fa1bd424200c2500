"""Compile the `rate_limits:` section: each rule's teams and models must exist (a model is an
exposed model or a tier, the names requests send), and rule names are unique."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config.checks import Problem, did_you_mean
from gateway.config.model import RateLimitRule, RateLimitsConfig
from gateway.config.schema import RateLimitsSpec


def compile_rate_limits(
    spec: RateLimitsSpec, teams: Iterable[str], models: Iterable[str], problems: list[Problem]
) -> RateLimitsConfig:
    known = {"teams": sorted(teams), "models": sorted(models)}
    rules: list[RateLimitRule] = []
    seen: set[str] = set()
    for i, rule in enumerate(spec.rules):
        if rule is None:
            continue  # its own problem is recorded
        path = f"rate_limits.rules[{i}]"
        if rule.name in seen:
            problems.append((f"{path}.name", f"another rule is named {rule.name!r}"))
        seen.add(rule.name)
        for what, names in (("teams", rule.teams), ("models", rule.models)):
            for j, name in enumerate(names):
                if name not in known[what]:
                    hint = did_you_mean(name, known[what]) or (
                        f" (defined: {', '.join(known[what]) or 'none'})"
                    )
                    where = "models or tiers" if what == "models" else "teams"
                    problems.append(
                        (f"{path}.{what}[{j}]", f"{name!r} is not defined in {where}{hint}")
                    )
        rules.append(
            RateLimitRule(
                rule.name,
                rule.per,
                rule.requests_per_minute,
                rule.tokens_per_minute,
                frozenset(rule.teams),
                frozenset(rule.models),
            )
        )
    return RateLimitsConfig(tuple(rules), spec.local_share)
