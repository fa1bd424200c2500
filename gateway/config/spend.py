"""Compile the spend-control config: budgets (team shorthand and `budgets.rules`), alert
webhooks, shared costs and how shared spend is allocated in chargeback.

Cross-references checked here: a budget names a defined team, a defined model to downgrade to,
and a key of its own team; budget, webhook and shared-cost names are unique; a `fixed`
allocation weighs exactly the non-shared teams. `admin_budget` runs the same checks on a budget
sent to the admin API (or `spendgate budgets set`), against the running config.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import replace
from types import MappingProxyType

from gateway.config.checks import Problem, did_you_mean, join
from gateway.config.model import (
    AlertsConfig,
    Allocation,
    AllocationMethod,
    BudgetConfig,
    BudgetsConfig,
    Config,
    DeclaredKey,
    ReviewSchedule,
    SharedCost,
    Webhook,
)
from gateway.config.schema import WEEKDAYS, BudgetRuleSpec, BudgetSpec, RootSpec, TeamSpec

KEY_ID = re.compile(r"key_[0-9a-f]{12}")  # compile.key_id's form


class BudgetRefs:
    """What a budget may refer to (teams, models, declared keys) and the checks of those
    references, shared by the config compiler and the admin API."""

    def __init__(
        self,
        teams: Collection[str],
        models: Collection[str],
        keys: tuple[DeclaredKey, ...],
        default_thresholds: tuple[int, ...],
        *,
        broken_teams: Collection[str] = (),
        broken_keys: Collection[str] = (),
    ) -> None:
        self.teams = teams  # every defined name, broken entries included
        self.models = list(models)
        self.default_thresholds = default_thresholds
        # Teams whose entry is broken (its problem is recorded): nothing more is said of them.
        self.broken_teams = frozenset(broken_teams)
        # A team with a broken key entry may have the key a budget names: don't pile on.
        self.broken_keys = frozenset(broken_keys)
        # Declared keys, for key budgets that name one: team -> key name -> ids; id -> team.
        self.key_names: defaultdict[str, defaultdict[str, list[str]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.key_teams: dict[str, str] = {}
        for key in keys:
            principal = key.principal
            self.key_names[principal.team][principal.name or ""].append(principal.key_id)
            self.key_teams[principal.key_id] = principal.team

    def check_team(self, team: str, path: str, problems: list[Problem]) -> bool:
        """True if `team` is defined and valid (a broken team's problem is already recorded)."""
        if team in self.teams:
            return team not in self.broken_teams
        names = list(self.teams)
        hint = did_you_mean(team, names) or f" (defined: {', '.join(names) or 'none'})"
        problems.append((path, f"team {team!r} is not defined in teams{hint}"))
        return False

    def budget(
        self, team: str, spec: BudgetSpec, path: str, problems: list[Problem]
    ) -> BudgetConfig | None:
        match = spec.match
        if spec.scope == "key" and match is not None:
            match = self.key_match(team, match, join(path, "match"), problems)
        if spec.downgrade_to is not None and spec.downgrade_to not in self.models:
            models = self.models
            hint = did_you_mean(spec.downgrade_to, models) or f" (defined: {', '.join(models)})"
            reason = f"model {spec.downgrade_to!r} is not defined in models{hint}"
            problems.append((join(path, "downgrade_to"), reason))
            return None
        if match is None and spec.scope != "team":
            return None
        thresholds = spec.thresholds
        return BudgetConfig(
            name=spec.name,
            team=team,
            scope=spec.scope,
            match=match,
            period=spec.period,
            limit_nano=spec.limit_usd,
            limit_tokens=spec.limit_tokens,
            on_exceed=spec.on_exceed,
            downgrade_to=spec.downgrade_to,
            thresholds=self.default_thresholds if thresholds is None else thresholds,
        )

    def key_match(self, team: str, match: str, path: str, problems: list[Problem]) -> str | None:
        """A key budget's match as a key id: an id as given, or a declared key's name."""
        if KEY_ID.fullmatch(match):
            owner = self.key_teams.get(match)
            if owner is not None and owner != team:
                reason = f"key {match!r} is declared in team {owner!r}, not {team!r}"
                problems.append((path, reason))
                return None
            return match  # possibly a key issued through the admin API
        names = self.key_names[team]
        ids = names.get(match, [])
        if len(ids) > 1:
            reason = f"{len(ids)} keys of team {team!r} are named {match!r}: give the key id"
            problems.append((path, reason))
        elif not ids and team not in self.broken_keys:
            hint = did_you_mean(match, list(names)) or (
                f" (its keys: {', '.join(names)})" if names else ""
            )
            reason = (
                f"no key named {match!r} in teams.{team}.keys{hint}; "
                "give a key name from there or a key id (key_ and 12 hex digits)"
            )
            problems.append((path, reason))
        return ids[0] if len(ids) == 1 else None


def admin_budget(spec: BudgetRuleSpec, config: Config) -> tuple[BudgetConfig | None, list[Problem]]:
    """A budget the admin API received, in `budgets.rules[]`'s shape (`Record(BudgetRuleSpec)`
    checked it), with the config's cross-reference checks against the running `config`:
    (budget, []) or (None, problems)."""
    problems: list[Problem] = []
    refs = BudgetRefs(config.teams, config.models, config.keys, config.budgets.thresholds)
    budget = None
    if refs.check_team(spec.team, "team", problems):
        budget = refs.budget(spec.team, spec, "", problems)
    if budget is None:
        return None, problems
    return replace(budget, source="admin"), problems


class SpendCompiler:
    """Records its problems in the list it is given, like the main compiler it works for."""

    def __init__(
        self, root: RootSpec, keys: tuple[DeclaredKey, ...], problems: list[Problem]
    ) -> None:
        self.root = root
        self.problems = problems
        self.refs = BudgetRefs(
            root.teams,
            root.models,
            keys,
            root.budgets.thresholds,
            broken_teams={name for name, spec in root.teams.items() if spec is None},
            broken_keys={name for name, spec in self.teams() if None in spec.keys},
        )

    def teams(self) -> list[tuple[str, TeamSpec]]:
        return [(name, spec) for name, spec in self.root.teams.items() if spec is not None]

    def shared_spend_allocation(self) -> Allocation:
        spec = self.root.pricing.shared_spend
        return self.allocation(spec.allocation, spec.weights, "pricing.shared_spend")

    def unique(self, what: str, name: str, path: str, seen: dict[str, str]) -> bool:
        """False, after recording the problem at `path`.name, if `name` was seen before."""
        if name in seen:
            self.problems.append(
                (f"{path}.name", f"duplicate {what} name {name!r} (also {seen[name]})")
            )
            return False
        seen[name] = path
        return True

    def check_shared_teams(self) -> None:
        # Chargeback spreads shared teams' spend and shared costs over the non-shared teams.
        teams = self.teams()
        if len(teams) < len(self.root.teams) or any(not spec.shared for _, spec in teams):
            return  # a broken team may be the non-shared one; its own problem is reported
        if teams:
            reason = "every team is shared: at least one must not be, to carry the shared spend"
            self.problems.append(("teams", reason))
        elif self.root.pricing.shared_costs:
            reason = "no team to allocate shared costs to: define a non-shared team under teams"
            self.problems.append(("pricing.shared_costs", reason))

    def budgets(self) -> BudgetsConfig:
        specs: list[tuple[str, str, BudgetSpec | None]] = [
            (team, f"teams.{team}.budgets[{i}]", budget)
            for team, spec in self.teams()
            for i, budget in enumerate(spec.budgets)
        ]
        for i, rule in enumerate(self.root.budgets.rules):
            path = f"budgets.rules[{i}]"
            if rule is not None and self.check_team(rule.team, f"{path}.team"):
                specs.append((rule.team, path, rule))
        budgets: list[BudgetConfig] = []
        seen: dict[str, str] = {}
        for team, path, spec in specs:
            if spec is not None and self.unique("budget", spec.name, path, seen):
                budget = self.refs.budget(team, spec, path, self.problems)
                if budget is not None:
                    budgets.append(budget)
        settings = self.root.budgets
        return BudgetsConfig(
            tuple(budgets),
            settings.reservation_ttl_s,
            settings.lease_fraction,
            settings.lease_window_s,
            settings.thresholds,
        )

    def check_team(self, team: str, path: str) -> bool:
        return self.refs.check_team(team, path, self.problems)

    def alerts(self) -> AlertsConfig:
        spec = self.root.alerts
        webhooks: list[Webhook] = []
        seen: dict[str, str] = {}
        for i, hook in enumerate(spec.webhooks):
            if hook is not None and self.unique(
                "webhook", hook.name, f"alerts.webhooks[{i}]", seen
            ):
                webhooks.append(Webhook(hook.name, hook.url, hook.events))
        review = None
        if spec.review is not None:
            review = ReviewSchedule(WEEKDAYS.index(spec.review.weekday), spec.review.hour_utc)
        return AlertsConfig(tuple(webhooks), spec.cooldown_s, spec.timeout_s, review)

    def shared_costs(self) -> tuple[SharedCost, ...]:
        costs: list[SharedCost] = []
        seen: dict[str, str] = {}
        for i, spec in enumerate(self.root.pricing.shared_costs):
            path = f"pricing.shared_costs[{i}]"
            if spec is not None and self.unique("shared cost", spec.name, path, seen):
                allocation = self.allocation(spec.allocation, spec.weights, path)
                costs.append(SharedCost(spec.name, spec.monthly_usd, allocation))
        return tuple(costs)

    def allocation(
        self, method: AllocationMethod, weights: dict[str, int], path: str
    ) -> Allocation:
        if method == "fixed" and weights:
            self.check_weights(weights, f"{path}.weights")
        return Allocation(method, MappingProxyType(dict(weights)))

    def check_weights(self, weights: dict[str, int], path: str) -> None:
        # Weights name exactly the teams that take a share, so a new team is never silently
        # left out of a fixed split.
        for team in weights:
            if not self.check_team(team, f"{path}.{team}"):
                continue
            spec = self.root.teams[team]
            if spec is not None and spec.shared:
                reason = f"team {team!r} is shared: its own spend is allocated, it takes no share"
                self.problems.append((f"{path}.{team}", reason))
        if len(self.teams()) < len(self.root.teams):
            return
        missing = [name for name, spec in self.teams() if not spec.shared and name not in weights]
        if missing:
            reason = (
                f"no weight for {', '.join(missing)}: "
                "with allocation 'fixed' every non-shared team needs one"
            )
            self.problems.append((path, reason))
