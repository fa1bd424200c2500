"""Validated specs -> the frozen runtime `Config`, checking every cross-reference on the way.

Deployments must name a defined provider and resolve to a price (override, then litellm's
table); deployment ids, declared keys and budget names must be unique; budgets name a defined
team, model and key; `fixed` allocations weigh every non-shared team; tiers and cache routes
name defined models (`optimizers`). Plain secrets leave as sha256 digests, and every mapping in
the result is read-only.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType

from gateway.config.anomalies import compile_anomalies
from gateway.config.checks import Problem, did_you_mean
from gateway.config.model import (
    AggregatorConfig,
    CircuitBreakerConfig,
    Config,
    DeclaredKey,
    Deployment,
    ForecastsConfig,
    ModelRoute,
    ProviderConfig,
    ServerConfig,
    StoreConfig,
    TeamConfig,
    Timeouts,
)
from gateway.config.optimizers import OptimizerCompiler
from gateway.config.policyspec import Vocabulary, compile_policies
from gateway.config.ratelimits import compile_rate_limits
from gateway.config.schema import (
    AggregatorSpec,
    DeploymentSpec,
    KeySpec,
    ModelSpec,
    ProviderSpec,
    RootSpec,
    StoreSpec,
    TeamSpec,
)
from gateway.config.spend import SpendCompiler
from gateway.errors import ConfigError
from gateway.pricing.price import Price
from gateway.pricing.table import PriceTable, load_price_table, price_from_override
from gateway.types import Principal


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    """The public id of a virtual key: short enough to log, derived from its digest."""
    return f"key_{key_hash[:12]}"


def compile_config(root: RootSpec, source: str, *, prices: PriceTable | None = None) -> Config:
    """Build the runtime config, or raise ConfigError with every cross-reference problem."""
    compiler = _Compiler(root, prices if prices is not None else load_price_table())
    config = compiler.build(source)
    if compiler.problems:
        raise ConfigError(source, compiler.problems)
    return config


class _Compiler:
    def __init__(self, root: RootSpec, prices: PriceTable) -> None:
        self.root = root
        self.prices = prices
        self.problems: list[Problem] = []
        # Set when an entry was skipped because it is broken (its problem is already recorded):
        # checks that need the whole picture, like "this override is unused", then stay quiet.
        self.incomplete = False
        self.deployment_ids: dict[str, tuple[str, str]] = {}  # id -> (upstream, first path)
        self.used_overrides: set[str] = set()

    def build(self, source: str) -> Config:
        root = self.root
        providers = {name: _provider(name, spec) for name, spec in root.providers.items() if spec}
        models = {name: self.model(name, spec) for name, spec in root.models.items() if spec}
        self.incomplete |= None in root.models.values() or None in root.providers.values()
        self.check_unused_overrides()
        server = self.server()
        keys = self.keys(server.admin_key_hash, server.reporting_key_hash)
        spend = SpendCompiler(root, keys, self.problems)
        spend.check_shared_teams()
        optimizers = OptimizerCompiler(root, self.problems)
        return Config(
            source=source,
            server=server,
            store=_store(root.store),
            providers=MappingProxyType(providers),
            models=MappingProxyType(models),
            teams=MappingProxyType({name: _team(name, spec) for name, spec in self.teams()}),
            keys=keys,
            budgets=spend.budgets(),
            rate_limits=compile_rate_limits(
                root.rate_limits, root.teams, [*root.models, *root.tiers], self.problems
            ),
            alerts=spend.alerts(),
            aggregator=_aggregator(root.aggregator),
            forecasts=ForecastsConfig(
                history_days=root.forecasts.history_days,
                interval_s=root.forecasts.interval_s,
                alert_min_history_days=root.forecasts.alert_min_history_days,
            ),
            anomalies=compile_anomalies(root.anomalies, list(root.teams), self.problems),
            shared_costs=spend.shared_costs(),
            shared_spend_allocation=spend.shared_spend_allocation(),
            tiers=optimizers.tiers(),
            cache=optimizers.cache(),
            batching=optimizers.batching(),
            policies=compile_policies(root.policies, self.vocabulary(), self.problems),
        )

    def vocabulary(self) -> Vocabulary:
        """What policies may name. Tag keys: those config keys carry and tag budgets match."""
        root = self.root
        tag_keys = {k for _, team in self.teams() for key in team.keys if key for k in key.tags}
        budgets = [b for _, team in self.teams() for b in team.budgets]
        budgets += root.budgets.rules
        tag_keys |= {
            b.match.partition("=")[0] for b in budgets if b and b.scope == "tag" and b.match
        }
        tiers = {name: spec.candidates for name, spec in root.tiers.items() if spec}
        return Vocabulary(list(root.models), tiers, list(root.teams), sorted(tag_keys))

    def teams(self) -> list[tuple[str, TeamSpec]]:
        return [(name, spec) for name, spec in self.root.teams.items() if spec is not None]

    def server(self) -> ServerConfig:
        spec = self.root.server
        return ServerConfig(
            host=spec.host,
            port=spec.port,
            max_body_bytes=spec.max_body_bytes,
            # An empty admin key (`${SPENDGATE_ADMIN_KEY:-}` unset) disables the admin API.
            admin_key_hash=sha256_hex(spec.admin_key) if spec.admin_key else None,
            reporting_key_hash=self.reporting_key_hash(),
            key_cache_ttl_s=spec.key_cache_ttl_s,
            access_log=spec.access_log,
            default_max_tokens=spec.default_max_tokens,
            drain_s=spec.drain_s,
        )

    def model(self, name: str, spec: ModelSpec) -> ModelRoute:
        deployments: list[Deployment] = []
        ids_here: dict[str, str] = {}
        for i, dep in enumerate(spec.deployments):
            path = f"models.{name}.deployments[{i}]"
            if dep is None:
                self.incomplete = True
                continue
            deployment = self.deployment(dep, path, ids_here)
            if deployment is not None:
                deployments.append(deployment)
        return ModelRoute(
            name=name,
            deployments=tuple(deployments),
            strategy=spec.strategy,
            retries=spec.retries,
            backoff_s=spec.backoff_s,
            owned_by=spec.owned_by,
            max_tokens_cap=spec.max_tokens_cap,
            max_prompt_tokens=spec.max_prompt_tokens,
        )

    def deployment(
        self, dep: DeploymentSpec, path: str, ids_here: dict[str, str]
    ) -> Deployment | None:
        upstream = f"{dep.provider}/{dep.model}"
        dep_id = dep.id or upstream
        self.check_id(dep_id, upstream, path, ids_here)
        providers = self.root.providers
        if dep.provider not in providers:
            defined = ", ".join(providers)
            reason = f"provider {dep.provider!r} is not defined in providers (defined: {defined})"
            self.problems.append((f"{path}.provider", reason))
            return None
        provider = providers[dep.provider]
        if provider is None:
            self.incomplete = True  # the provider's own problem is reported; don't pile on
            return None
        price = self.price(dep.provider, provider, dep.model, f"{path}.model")
        if price is None:
            return None
        return Deployment(
            id=dep_id, provider=dep.provider, model=dep.model, weight=dep.weight, price=price
        )

    def check_id(self, dep_id: str, upstream: str, path: str, ids_here: dict[str, str]) -> None:
        # One id names one upstream model, so its health is shared by every route that uses
        # it: two routes may list the same upstream, but one id may not mean two upstreams.
        where = "id" if dep_id != upstream else "model"
        if dep_id in ids_here:
            reason = f"duplicate deployment id {dep_id!r} (also {ids_here[dep_id]})"
            self.problems.append((f"{path}.{where}", reason))
            return
        ids_here[dep_id] = path
        first = self.deployment_ids.setdefault(dep_id, (upstream, path))
        if first[0] != upstream:
            reason = (
                f"duplicate deployment id {dep_id!r}: {first[1]} already uses it for {first[0]}"
            )
            self.problems.append((f"{path}.{where}", reason))

    def price(self, provider: str, spec: ProviderSpec, model: str, path: str) -> Price | None:
        overrides = self.root.pricing.overrides
        for key in (f"{provider}/{model}", model):
            if key not in overrides:
                continue
            self.used_overrides.add(key)
            override = overrides[key]
            if override is None:
                return None  # reported where it is written
            try:
                return price_from_override(
                    override.input_per_1m,
                    override.output_per_1m,
                    override.cached_input_per_1m,
                    override.reasoning_per_1m,
                )
            except ValueError as exc:
                self.problems.append((f"pricing.overrides.{key}", str(exc)))
                return None
        price = self.prices.lookup(model, spec.litellm_provider or None)
        if price is None:
            reason = (
                f"no price for model {model!r} (provider {provider!r}): "
                f"add pricing.overrides.{model} (or pricing.overrides.{provider}/{model})"
            )
            if self.prices.problem:
                reason += f"; {self.prices.problem}"
            self.problems.append((path, reason))
        return price

    def check_unused_overrides(self) -> None:
        # An override that matches nothing is almost always a typo, and a typo here would
        # silently bill the table's list price instead of the negotiated one.
        if self.incomplete:
            return
        upstreams = sorted(
            {
                name
                for spec in self.root.models.values()
                if spec
                for dep in spec.deployments
                if dep
                for name in (dep.model, f"{dep.provider}/{dep.model}")
            }
        )
        for key in self.root.pricing.overrides:
            if key not in self.used_overrides:
                hint = did_you_mean(key, upstreams) or " (name an upstream model or provider/model)"
                self.problems.append((f"pricing.overrides.{key}", f"matches no deployment{hint}"))

    def reporting_key_hash(self) -> str | None:
        spec = self.root.server
        if not spec.reporting_key:  # unset or empty: no reporting key
            return None
        if spec.reporting_key == spec.admin_key:
            # One secret cannot be both: which powers would a request carrying it have?
            self.problems.append(("server.reporting_key", "must differ from server.admin_key"))
            return None
        return sha256_hex(spec.reporting_key)

    def keys(
        self, admin_key_hash: str | None, reporting_key_hash: str | None
    ) -> tuple[DeclaredKey, ...]:
        keys: list[DeclaredKey] = []
        seen: dict[str, str] = {}
        for team, spec in self.teams():
            for i, key in enumerate(spec.keys):
                if key is None:
                    continue
                path = f"teams.{team}.keys[{i}].{'key' if key.key else 'sha256'}"
                digest = _digest(key)
                if digest in seen:
                    self.problems.append((path, f"duplicate key: the same key as {seen[digest]}"))
                    continue
                if digest == admin_key_hash:
                    self.problems.append((path, "must differ from server.admin_key"))
                    continue
                if digest == reporting_key_hash:
                    self.problems.append((path, "must differ from server.reporting_key"))
                    continue
                seen[digest] = path
                keys.append(DeclaredKey(digest, _principal(team, key, digest), key.role))
        return tuple(keys)


def _digest(key: KeySpec) -> str:
    return key.sha256.lower() if key.sha256 else sha256_hex(key.key or "")


def _principal(team: str, key: KeySpec, digest: str) -> Principal:
    return Principal(
        key_id=key_id(digest),
        team=team,
        project=key.project,
        environment=key.environment,
        workload=key.workload,
        tags=MappingProxyType(dict(key.tags)),
        name=key.name,
    )


def _provider(name: str, spec: ProviderSpec) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind=spec.kind,
        base_url=spec.base_url,
        api_key=spec.api_key or None,
        auth=spec.auth,
        headers=MappingProxyType(dict(spec.headers)),
        api_version=spec.api_version,
        litellm_provider=spec.litellm_provider,
        timeouts=Timeouts(*spec.timeouts.resolved()),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=spec.circuit_breaker.failure_threshold,
            cooldown_s=spec.circuit_breaker.cooldown_s,
        ),
    )


def _store(spec: StoreSpec) -> StoreConfig:
    return StoreConfig(
        url=spec.url,
        data_dir=spec.data_dir,
        on_unavailable=spec.on_unavailable,
        spool_dir=spec.spool_dir,
        spool_max_bytes=spec.spool_max_bytes,
        spool_fsync_interval_s=spec.spool_fsync_interval_s,
    )


def _team(name: str, spec: TeamSpec) -> TeamConfig:
    revenue = spec.revenue
    return TeamConfig(
        name=name,
        description=spec.description,
        shared=spec.shared,
        revenue_per_request_nano=revenue.per_request_usd if revenue else None,
        monthly_revenue_nano=revenue.monthly_usd if revenue else None,
        units_name=spec.units.name if spec.units else None,
        monthly_units=spec.units.monthly if spec.units else None,
    )


def _aggregator(spec: AggregatorSpec) -> AggregatorConfig:
    return AggregatorConfig(
        batch_size=spec.batch_size,
        block_ms=spec.block_ms,
        linger_ms=spec.linger_ms,
        claim_idle_s=spec.claim_idle_s,
        archive_dir=spec.archive_dir,
        stream_retention_s=spec.stream_retention_s,
    )
