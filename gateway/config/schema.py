"""The YAML shape of gateway.yaml: every section and key, its type, default and limits.

`validate(raw)` checks a parsed, env-substituted document against it and returns typed specs
for `compile`, collecting every problem as (key path, reason). A new section is one spec
dataclass here plus one field on `RootSpec`; the generic checks in `checks` do the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, get_args

from gateway.config.checks import (
    Bool,
    Check,
    Distinct,
    Entries,
    Increasing,
    Int,
    Invalid,
    ListOf,
    Number,
    OneOf,
    Problem,
    Record,
    Spec,
    Str,
    StrMap,
    SubsetOf,
    Url,
    Usd,
    checks,
    describe,
    did_you_mean,
)
from gateway.config.model import (
    CASCADE_CHECKS,
    TIER_HINTS,
    AllocationMethod,
    AuthStyle,
    BudgetScope,
    CacheMode,
    CascadeCheck,
    CoalesceBilling,
    OnExceed,
    OnUnavailable,
    Period,
    ProviderKind,
    RateLimitPer,
    Strategy,
    TierHint,
)
from gateway.config.policyspec import PoliciesSpec
from gateway.config.storeurl import cluster_url_problem
from gateway.rediskeys import CACHE_SHARDS
from gateway.types import MAX_EXACT, NANO_PER_USD

# The shape of the file.
_PROVIDER_NAME = Str(pattern=r"[a-z0-9_-]+", rule="provider names use only a-z, 0-9, _ and -")
_TEAM_NAME = Str(pattern=r"[A-Za-z0-9_.-]+", rule="team names use only A-Z, a-z, 0-9, _, . and -")
_HEADER_NAME = Str(pattern=r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", rule="expected an HTTP header name")
_HEADER_VALUE = Str(
    allow_empty=True, pattern=r"[^\r\n]*", rule="must not contain line breaks", secret=True
)
_SECRET = Str(allow_empty=True, secret=True)  # empty means "not set" (e.g. `${VAR:-}`)
# A pasted plain key in the wrong field must not be echoed, so digests count as secret too.
_SHA256 = Str(pattern=r"[0-9a-fA-F]{64}", rule="expected 64 hex digits", secret=True)
_NAME_RULE = "use only A-Z, a-z, 0-9, _, . and -"
# Budget names end up in Redis keys, metric labels and headers: short, and of a safe alphabet.
BUDGET_NAME_MAX = 100
_BUDGET_NAME = Str(
    pattern=r"[A-Za-z0-9_.-]+", rule=f"budget names {_NAME_RULE}", max_len=BUDGET_NAME_MAX
)
# Budget limits stay below what the budget scripts compare exactly (~9 million USD).
_BUDGET_USD = Usd(positive=True, max_usd=Decimal(MAX_EXACT - 1) / NANO_PER_USD)
_TEXT_MAX = 200  # labels: key names, projects, budget matches, tag names and values
LABEL = Str(max_len=_TEXT_MAX)
TAGS = StrMap(Str(max_len=_TEXT_MAX), Str(allow_empty=True, max_len=_TEXT_MAX), max_items=50)
_NAME = Str(pattern=r"[A-Za-z0-9_.-]+", rule=f"names {_NAME_RULE}")
_THRESHOLDS = Increasing(Int(min=1, max=1000))  # percent of the limit
KEY_PREFIX = "sk-sg-"
KEY_MIN_LEN = 20
# What a webhook can be sent; model.Webhook's default subscribes to all of them.
ALERT_EVENTS: Final = (
    "budget_threshold",
    "budget_exceeded",
    "budget_forecast",
    "anomaly",
    "review",
)
WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DEFAULT_THRESHOLDS: Final = (50, 75, 90, 100)
_MATCH_HELP: Final = {
    "key": "a key id (key_ and 12 hex digits) or the name of one of the team's keys",
    "project": "the project name",
    "tag": "a tag written key=value",
}


@dataclass(frozen=True, kw_only=True)
class ServerSpec(Spec):
    host: str = field(default="127.0.0.1", metadata=checks(Str()))
    port: int = field(default=8080, metadata=checks(Int(min=1, max=65535)))
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata=checks(Int(min=1)))
    admin_key: str | None = field(default=None, repr=False, metadata=checks(_SECRET))
    # Read-only: reports, forecasts, anomalies and the dashboard of every team; no mutation.
    reporting_key: str | None = field(default=None, repr=False, metadata=checks(_SECRET))
    key_cache_ttl_s: float = field(default=30.0, metadata=checks(Number(min=0)))
    access_log: bool = field(default=True, metadata=checks(Bool()))
    default_max_tokens: int = field(default=4096, metadata=checks(Int(min=1)))
    drain_s: float = field(default=60.0, metadata=checks(Number(min=0)))


@dataclass(frozen=True, kw_only=True)
class StoreSpec(Spec):
    url: str = field(
        default="local://",
        metadata=checks(
            Url(
                "local",
                "memory",
                "redis",
                "rediss",
                "unix",
                "redis+sentinel",
                "redis+cluster",
                "rediss+cluster",
                secret=True,
                problem=cluster_url_problem,
            )
        ),
    )
    data_dir: str = field(default="var/store", metadata=checks(Str()))
    on_unavailable: OnUnavailable = field(
        default="open", metadata=checks(OneOf(*get_args(OnUnavailable)))
    )
    spool_dir: str = field(default="var/spool", metadata=checks(Str()))
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=checks(Int(min=1)))
    spool_fsync_interval_s: float = field(default=1.0, metadata=checks(Number(positive=True)))


@dataclass(frozen=True, kw_only=True)
class TimeoutsSpec(Spec):
    # Unset, connect_s and first_byte_s are 5 and 60 but never more than total_s, so setting
    # only `total_s: 30` is valid. Set explicitly, they must fit in it.
    connect_s: float | None = field(default=None, metadata=checks(Number(positive=True)))
    first_byte_s: float | None = field(default=None, metadata=checks(Number(positive=True)))
    total_s: float = field(default=600.0, metadata=checks(Number(positive=True)))

    def problems(self) -> Iterator[Problem]:
        for name in ("connect_s", "first_byte_s"):
            value = getattr(self, name)
            if value is not None and value > self.total_s:
                yield name, f"must not exceed total_s ({self.total_s:g})"

    def resolved(self) -> tuple[float, float, float]:
        """(connect_s, first_byte_s, total_s) with the defaults filled in."""
        connect = self.connect_s if self.connect_s is not None else min(5.0, self.total_s)
        first_byte = self.first_byte_s if self.first_byte_s is not None else min(60.0, self.total_s)
        return connect, first_byte, self.total_s


@dataclass(frozen=True, kw_only=True)
class CircuitBreakerSpec(Spec):
    failure_threshold: int = field(default=5, metadata=checks(Int(min=1)))
    cooldown_s: float = field(default=30.0, metadata=checks(Number(positive=True)))


@dataclass(frozen=True, kw_only=True)
class ProviderSpec(Spec):
    kind: ProviderKind = field(metadata=checks(OneOf(*get_args(ProviderKind))))
    base_url: str = field(metadata=checks(Url("http", "https")))
    api_key: str | None = field(default=None, repr=False, metadata=checks(_SECRET))
    auth: AuthStyle = field(default="bearer", metadata=checks(OneOf(*get_args(AuthStyle))))
    headers: dict[str, str] = field(
        default_factory=dict, repr=False, metadata=checks(StrMap(_HEADER_NAME, _HEADER_VALUE))
    )
    api_version: str | None = field(default=None, metadata=checks(Str()))
    litellm_provider: str | None = field(default=None, metadata=checks(Str()))
    timeouts: TimeoutsSpec = field(
        default_factory=TimeoutsSpec, metadata=checks(Record(TimeoutsSpec))
    )
    circuit_breaker: CircuitBreakerSpec = field(
        default_factory=CircuitBreakerSpec, metadata=checks(Record(CircuitBreakerSpec))
    )

    def problems(self) -> Iterator[Problem]:
        if self.kind == "litellm" and not self.litellm_provider:
            yield "litellm_provider", "required when kind is 'litellm' (e.g. anthropic, bedrock)"
        if self.kind != "litellm" and self.litellm_provider:
            yield "litellm_provider", f"only allowed when kind is 'litellm', not {self.kind!r}"
        if self.kind == "openai" and self.auth != "none" and not self.api_key:
            yield "api_key", f"required with auth {self.auth!r} (use auth: none for no auth)"


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec(Spec):
    provider: str = field(metadata=checks(Str()))
    model: str = field(metadata=checks(Str()))
    weight: int = field(default=1, metadata=checks(Int(min=1)))
    id: str | None = field(default=None, metadata=checks(Str()))


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Spec):
    strategy: Strategy = field(default="weighted", metadata=checks(OneOf(*get_args(Strategy))))
    retries: int = field(default=2, metadata=checks(Int(min=0)))
    backoff_s: float = field(default=0.05, metadata=checks(Number(min=0)))
    owned_by: str = field(default="spendgate", metadata=checks(Str()))
    max_tokens_cap: int | None = field(default=None, metadata=checks(Int(min=1)))
    max_prompt_tokens: int | None = field(default=None, metadata=checks(Int(min=1)))
    deployments: list[DeploymentSpec | None] = field(
        metadata=checks(ListOf(Record(DeploymentSpec), required_one="deployment"))
    )


@dataclass(frozen=True, kw_only=True)
class PriceSpec(Spec):
    input_per_1m: float = field(metadata=checks(Number(min=0)))
    output_per_1m: float = field(metadata=checks(Number(min=0)))
    cached_input_per_1m: float | None = field(default=None, metadata=checks(Number(min=0)))
    reasoning_per_1m: float | None = field(default=None, metadata=checks(Number(min=0)))


def _allocation_problems(method: AllocationMethod, weights: dict[str, int]) -> Iterator[Problem]:
    if method == "fixed" and not weights:
        yield "weights", "required when allocation is 'fixed': a weight for every non-shared team"
    elif method != "fixed" and weights:
        yield "weights", f"only used when allocation is 'fixed', not {method!r}"


_ALLOCATION = OneOf(*get_args(AllocationMethod))
_WEIGHTS = StrMap(Str(), Int(min=1))  # team -> weight; teams are checked by compile


@dataclass(frozen=True, kw_only=True)
class AllocationSpec(Spec):
    allocation: AllocationMethod = field(default="proportional", metadata=checks(_ALLOCATION))
    weights: dict[str, int] = field(default_factory=dict, metadata=checks(_WEIGHTS))

    def problems(self) -> Iterator[Problem]:
        return _allocation_problems(self.allocation, self.weights)


@dataclass(frozen=True, kw_only=True)
class SharedCostSpec(Spec):
    name: str = field(metadata=checks(_NAME))
    monthly_usd: int = field(metadata=checks(Usd()))  # Usd checks yield nano-USD
    allocation: AllocationMethod = field(default="proportional", metadata=checks(_ALLOCATION))
    weights: dict[str, int] = field(default_factory=dict, metadata=checks(_WEIGHTS))

    def problems(self) -> Iterator[Problem]:
        return _allocation_problems(self.allocation, self.weights)


@dataclass(frozen=True, kw_only=True)
class PricingSpec(Spec):
    overrides: dict[str, PriceSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(PriceSpec), name=Str()))
    )
    shared_costs: list[SharedCostSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(SharedCostSpec)))
    )
    shared_spend: AllocationSpec = field(
        default_factory=AllocationSpec, metadata=checks(Record(AllocationSpec))
    )


@dataclass(frozen=True, kw_only=True)
class KeySpec(Spec):
    name: str = field(metadata=checks(LABEL))
    key: str | None = field(
        default=None,
        repr=False,
        metadata=checks(Str(secret=True, example=KEY_PREFIX + "unset-placeholder-key")),
    )
    sha256: str | None = field(default=None, metadata=checks(_SHA256))
    project: str | None = field(default=None, metadata=checks(LABEL))
    environment: str | None = field(default=None, metadata=checks(LABEL))
    workload: str | None = field(default=None, metadata=checks(LABEL))
    tags: dict[str, str] = field(default_factory=dict, metadata=checks(TAGS))
    # client: sends traffic; reader: only reads the team's spend (GET /v1/spendgate/...).
    role: Literal["client", "reader"] = field(
        default="client", metadata=checks(OneOf("client", "reader"))
    )

    def problems(self) -> Iterator[Problem]:
        if self.role == "reader":
            for name in ("project", "environment", "workload"):
                if getattr(self, name) is not None:
                    yield name, "only a client key is attributed (a reader key sends no traffic)"
            if self.tags:
                yield "tags", "only a client key is attributed (a reader key sends no traffic)"
        if (self.key is None) == (self.sha256 is None):
            yield "key", "give exactly one of key (the plain key) or sha256 (its digest)"
        elif self.key is not None and (
            not self.key.startswith(KEY_PREFIX) or len(self.key) < KEY_MIN_LEN
        ):
            yield "key", f"must start with {KEY_PREFIX!r} and be {KEY_MIN_LEN}+ characters long"


@dataclass(frozen=True, kw_only=True)
class BudgetSpec(Spec):
    """A budget under `teams.<team>.budgets`, where the team is implied. Give limit_usd,
    limit_tokens or both; match is required unless scope is team (and not allowed then);
    downgrade_to is required with on_exceed downgrade (and not allowed otherwise)."""

    name: str = field(
        metadata=checks(_BUDGET_NAME, doc="Unique among all budgets (config and admin).")
    )
    period: Period = field(
        metadata=checks(
            OneOf(*get_args(Period)),
            doc="Calendar periods in UTC (weeks start on Monday); total never resets.",
        )
    )
    limit_usd: int | None = field(  # nano-USD
        default=None, metadata=checks(_BUDGET_USD, doc="Spend limit per period, in USD.")
    )
    limit_tokens: int | None = field(
        default=None,
        metadata=checks(Int(min=1, max=MAX_EXACT - 1), doc="Token limit per period."),
    )
    scope: BudgetScope = field(
        default="team",
        metadata=checks(
            OneOf(*get_args(BudgetScope)),
            doc="What the budget limits: all of the team's traffic, or the part `match` selects.",
        ),
    )
    match: str | None = field(
        default=None,
        metadata=checks(
            Str(max_len=_TEXT_MAX),
            doc="key: a key id (key_ and 12 hex digits) or the name of a key declared in the "
            "team's config; project: a project name; tag: key=value.",
        ),
    )
    on_exceed: OnExceed = field(
        default="block",
        metadata=checks(
            OneOf(*get_args(OnExceed)),
            doc="block: refuse with 429; downgrade: serve from downgrade_to; alert: only alert.",
        ),
    )
    downgrade_to: str | None = field(
        default=None, metadata=checks(Str(), doc="A configured model, for on_exceed downgrade.")
    )
    thresholds: tuple[int, ...] | None = field(
        default=None,
        metadata=checks(
            _THRESHOLDS,
            doc="Percents of the limit that alert, once each per period (default: "
            "budgets.thresholds of the config).",
        ),
    )

    def problems(self) -> Iterator[Problem]:
        if self.limit_usd is None and self.limit_tokens is None:
            yield "limit_usd", "give limit_usd, limit_tokens or both"
        if self.scope == "team" and self.match is not None:
            yield "match", "only allowed when scope is not 'team' (a team budget covers it all)"
        elif self.scope != "team" and self.match is None:
            yield "match", f"required when scope is {self.scope!r}: {_MATCH_HELP[self.scope]}"
        elif self.scope == "tag" and self.match is not None:
            tag, _, value = self.match.partition("=")
            if not tag or not value:
                yield "match", f"expected key=value when scope is 'tag', got {describe(self.match)}"
        if self.on_exceed == "downgrade" and self.downgrade_to is None:
            yield "downgrade_to", "required when on_exceed is 'downgrade' (a model under models)"
        elif self.on_exceed != "downgrade" and self.downgrade_to is not None:
            reason = f"only allowed when on_exceed is 'downgrade', not {self.on_exceed!r}"
            yield "downgrade_to", reason


@dataclass(frozen=True, kw_only=True)
class BudgetRuleSpec(BudgetSpec):
    """A budget under `budgets.rules` (or created through the admin API), which names its
    team."""

    team: str = field(metadata=checks(Str(), doc="A team of the config."))


@dataclass(frozen=True, kw_only=True)
class RevenueSpec(Spec):
    per_request_usd: int | None = field(default=None, metadata=checks(Usd()))  # nano-USD
    monthly_usd: int | None = field(default=None, metadata=checks(Usd()))

    def problems(self) -> Iterator[Problem]:
        if self.per_request_usd is None and self.monthly_usd is None:
            yield "per_request_usd", "give per_request_usd, monthly_usd or both"


@dataclass(frozen=True, kw_only=True)
class UnitsSpec(Spec):
    """A team's business units a month (orders, documents, ...), for cost per unit."""

    name: str = field(metadata=checks(Str(max_len=_TEXT_MAX)))
    monthly: int = field(metadata=checks(Int(min=1)))


@dataclass(frozen=True, kw_only=True)
class TeamSpec(Spec):
    description: str | None = field(default=None, metadata=checks(Str(allow_empty=True)))
    shared: bool = field(default=False, metadata=checks(Bool()))
    revenue: RevenueSpec | None = field(default=None, metadata=checks(Record(RevenueSpec)))
    units: UnitsSpec | None = field(default=None, metadata=checks(Record(UnitsSpec)))
    budgets: list[BudgetSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(BudgetSpec)))
    )
    keys: list[KeySpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(KeySpec)))
    )


@dataclass(frozen=True, kw_only=True)
class BudgetsSpec(Spec):
    reservation_ttl_s: float = field(default=900.0, metadata=checks(Number(positive=True)))
    lease_fraction: float = field(default=0.01, metadata=checks(Number(min=0.0, max=0.25)))
    lease_window_s: float = field(default=5.0, metadata=checks(Number(positive=True, max=60.0)))
    thresholds: tuple[int, ...] = field(default=DEFAULT_THRESHOLDS, metadata=checks(_THRESHOLDS))
    rules: list[BudgetRuleSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(BudgetRuleSpec)))
    )


@dataclass(frozen=True, kw_only=True)
class WebhookSpec(Spec):
    name: str = field(metadata=checks(_NAME))
    # Slack-style URLs embed their token, so the URL is never echoed.
    url: str = field(repr=False, metadata=checks(Url("http", "https", secret=True)))
    events: tuple[str, ...] = field(
        default=ALERT_EVENTS, metadata=checks(SubsetOf(*ALERT_EVENTS, what="event"))
    )


@dataclass(frozen=True, kw_only=True)
class ReviewSpec(Spec):
    """When the aggregator posts each team's weekly review digest (UTC)."""

    weekday: str = field(default="monday", metadata=checks(OneOf(*WEEKDAYS)))
    hour_utc: int = field(default=9, metadata=checks(Int(min=0, max=23)))


@dataclass(frozen=True, kw_only=True)
class AlertsSpec(Spec):
    cooldown_s: float = field(default=3600.0, metadata=checks(Number(min=0)))
    timeout_s: float = field(default=5.0, metadata=checks(Number(positive=True)))
    webhooks: list[WebhookSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(WebhookSpec)))
    )
    review: ReviewSpec | None = field(default=None, metadata=checks(Record(ReviewSpec)))


@dataclass(frozen=True, kw_only=True)
class AggregatorSpec(Spec):
    batch_size: int = field(default=500, metadata=checks(Int(min=1, max=10_000)))
    block_ms: int = field(default=1000, metadata=checks(Int(min=1)))
    linger_ms: int = field(default=10, metadata=checks(Int(min=0, max=10_000)))
    claim_idle_s: float = field(default=60.0, metadata=checks(Number(positive=True)))
    archive_dir: str = field(default="var/archive", metadata=checks(Str()))
    stream_retention_s: float = field(default=48 * 3600.0, metadata=checks(Number(positive=True)))


@dataclass(frozen=True, kw_only=True)
class ForecastsSpec(Spec):
    history_days: int = field(default=120, metadata=checks(Int(min=28, max=400)))
    interval_s: float = field(default=900.0, metadata=checks(Number(min=1.0, max=86_400.0)))
    alert_min_history_days: int = field(default=14, metadata=checks(Int(min=7, max=400)))

    def problems(self) -> Iterator[Problem]:
        if self.alert_min_history_days > self.history_days:
            yield "alert_min_history_days", f"must not exceed history_days ({self.history_days})"


# Spend anomalies (`gateway.analytics.anomaly`): detection thresholds, with per-team overrides.
# Buckets tile hours, so that every bucket lies in one hour of the day and of the week.
_BUCKET_S = Int(min=1, max=3600)


@dataclass(frozen=True, kw_only=True)
class SeveritySpec(Spec):
    """One severity level: reached when the anomaly's deviation and its dollar excess both
    reach it. Unset keys take the level's default (or, for a team, the section's)."""

    z: float | None = field(default=None, metadata=checks(Number(positive=True, max=1000)))
    usd: int | None = field(default=None, metadata=checks(Usd()))


_LEVEL = Record(SeveritySpec)


@dataclass(frozen=True, kw_only=True)
class SeveritiesSpec(Spec):
    medium: SeveritySpec = field(default_factory=SeveritySpec, metadata=checks(_LEVEL))
    high: SeveritySpec = field(default_factory=SeveritySpec, metadata=checks(_LEVEL))
    critical: SeveritySpec = field(default_factory=SeveritySpec, metadata=checks(_LEVEL))


_Z = Number(positive=True, max=1000)


@dataclass(frozen=True, kw_only=True)
class AnomalyTeamSpec(Spec):
    """A team's own thresholds; unset keys take the section's."""

    enabled: bool | None = field(default=None, metadata=checks(Bool()))
    z: float | None = field(default=None, metadata=checks(_Z))
    min_impact_usd: int | None = field(default=None, metadata=checks(Usd()))
    severity: SeveritiesSpec = field(
        default_factory=SeveritiesSpec, metadata=checks(Record(SeveritiesSpec))
    )


@dataclass(frozen=True, kw_only=True)
class AnomaliesSpec(Spec):
    enabled: bool = field(default=True, metadata=checks(Bool()))
    bucket_s: int = field(default=300, metadata=checks(_BUCKET_S))
    seasonal_weeks: int = field(default=3, metadata=checks(Int(min=0, max=4)))
    cold_start_buckets: int = field(default=36, metadata=checks(Int(min=3, max=10_000)))
    cold_start_min_usd: int | None = field(default=None, metadata=checks(Usd(positive=True)))
    z: float = field(default=3.0, metadata=checks(_Z))
    min_impact_usd: int = field(default=5 * NANO_PER_USD, metadata=checks(Usd()))
    severity: SeveritiesSpec = field(
        default_factory=SeveritiesSpec, metadata=checks(Record(SeveritiesSpec))
    )
    resolve_after_buckets: int = field(default=6, metadata=checks(Int(min=1, max=10_000)))
    drop_buckets: int = field(default=3, metadata=checks(Int(min=1, max=10_000)))
    drift_days: int = field(default=7, metadata=checks(Int(min=4, max=21)))
    drift_min_rise_pct: float = field(default=25.0, metadata=checks(Number(positive=True)))
    expected_suppress_days: float = field(default=30.0, metadata=checks(Number(min=0, max=400)))
    teams: dict[str, AnomalyTeamSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(AnomalyTeamSpec), name=Str()))
    )

    def problems(self) -> Iterator[Problem]:
        if 3600 % self.bucket_s:
            divisors = ", ".join(str(d) for d in (5, 10, 30, 60, 300, 600, 900, 1800, 3600))
            reason = f"must divide an hour (3600 s) evenly, such as {divisors}; got {self.bucket_s}"
            yield "bucket_s", reason


# Cost optimizers: tiers (rules and cascades), the response cache, coalescing and batching.
# Which names a tier or cache route may use is checked by `optimizers`, which sees the models.
_RULE_NAME = Str(pattern=r"[A-Za-z0-9_.-]+", rule=f"rule names {_NAME_RULE}")
_CASCADE_CHECKS = SubsetOf(*CASCADE_CHECKS, what="check")
_WINDOW_MS_MAX: Final = 1000.0
_EMBEDDING_INPUTS_MAX: Final = 2048  # OpenAI's limit on inputs per embeddings request


def _any_of(what: str, item: Check[str] | None = None) -> Distinct[str]:
    """A rule condition's values: one, or a list of distinct ones (matching any of them)."""
    return Distinct(item or Str(), what=what, single=True)


@dataclass(frozen=True, kw_only=True)
class TierConditionSpec(Spec):
    prompt_tokens_gt: int | None = field(default=None, metadata=checks(Int(min=0)))
    prompt_tokens_lte: int | None = field(default=None, metadata=checks(Int(min=0)))
    hint: tuple[TierHint, ...] = field(
        default=(), metadata=checks(_any_of("hint", OneOf(*TIER_HINTS)))
    )
    team: tuple[str, ...] = field(default=(), metadata=checks(_any_of("team")))
    project: tuple[str, ...] = field(default=(), metadata=checks(_any_of("project")))
    environment: tuple[str, ...] = field(default=(), metadata=checks(_any_of("environment")))
    budget_used_pct_gte: float | None = field(
        default=None, metadata=checks(Number(positive=True, max=1000))
    )
    has_tools: bool | None = field(default=None, metadata=checks(Bool()))
    has_response_format: bool | None = field(default=None, metadata=checks(Bool()))
    has_code: bool | None = field(default=None, metadata=checks(Bool()))
    messages_gt: int | None = field(default=None, metadata=checks(Int(min=0)))

    def problems(self) -> Iterator[Problem]:
        low, high = self.prompt_tokens_gt, self.prompt_tokens_lte
        if low is not None and high is not None and high <= low:
            reason = f"must be greater than prompt_tokens_gt ({low}), got {high}"
            yield "prompt_tokens_lte", f"{reason}: no prompt could match"

    def always(self) -> bool:
        """True when no condition is set, so the rule applies to every request."""
        return self == TierConditionSpec()


@dataclass(frozen=True, kw_only=True)
class TierRuleSpec(Spec):
    name: str = field(metadata=checks(_RULE_NAME))
    use: str = field(metadata=checks(Str()))
    when: TierConditionSpec = field(
        default_factory=TierConditionSpec, metadata=checks(Record(TierConditionSpec))
    )


@dataclass(frozen=True, kw_only=True)
class CascadeSpec(Spec):
    stream: bool = field(default=False, metadata=checks(Bool()))
    # Last: from here on the field's name hides the `checks` function in this class body.
    checks: tuple[CascadeCheck, ...] = field(
        default=CASCADE_CHECKS, metadata=checks(_CASCADE_CHECKS)
    )


@dataclass(frozen=True, kw_only=True)
class TierSpec(Spec):
    candidates: tuple[str, ...] = field(metadata=checks(Distinct(Str(), what="candidate")))
    default: str = field(metadata=checks(Str()))
    rules: list[TierRuleSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(TierRuleSpec)))
    )
    cascade: CascadeSpec | None = field(default=None, metadata=checks(Record(CascadeSpec)))

    def problems(self) -> Iterator[Problem]:
        listed = ", ".join(self.candidates)
        if self.default not in self.candidates:
            hint = did_you_mean(self.default, list(self.candidates))
            yield "default", f"{self.default!r} is not one of the candidates ({listed}){hint}"
        for i, rule in enumerate(self.rules):
            if rule is not None and rule.use not in self.candidates:
                hint = did_you_mean(rule.use, list(self.candidates))
                reason = f"{rule.use!r} is not one of the candidates ({listed}){hint}"
                yield f"rules[{i}].use", reason
        if self.cascade is not None and len(self.candidates) < 2:
            yield "cascade", "needs at least two candidates, to escalate from one to the next"


@dataclass(frozen=True, kw_only=True)
class CacheRouteSpec(Spec):
    mode: CacheMode = field(
        default="deterministic", metadata=checks(OneOf(*get_args(CacheMode), false="off"))
    )
    ttl_s: float | None = field(default=None, metadata=checks(Number(positive=True)))
    shared: bool = field(default=False, metadata=checks(Bool()))

    def problems(self) -> Iterator[Problem]:
        if self.mode == "off" and self.ttl_s is not None:
            yield "ttl_s", "not used when mode is 'off' (nothing is cached)"
        if self.mode == "off" and self.shared:
            yield "shared", "not used when mode is 'off' (nothing is cached)"


@dataclass(frozen=True, kw_only=True)
class CacheSpec(Spec):
    enabled: bool = field(default=True, metadata=checks(Bool()))
    memory_max_bytes: int = field(default=16 * 1024 * 1024, metadata=checks(Int(min=0)))
    max_entry_bytes: int = field(default=1024 * 1024, metadata=checks(Int(min=1)))
    use_redis: bool = field(default=True, metadata=checks(Bool()))
    redis_max_bytes: int = field(default=256 * 1024 * 1024, metadata=checks(Int(min=1)))
    default_ttl_s: float = field(default=3600.0, metadata=checks(Number(positive=True)))
    hit_cost_fraction: float = field(default=0.0, metadata=checks(Number(min=0, max=1)))
    routes: dict[str, CacheRouteSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(CacheRouteSpec), name=Str()))
    )

    def problems(self) -> Iterator[Problem]:
        if self.enabled and self.memory_max_bytes == 0 and not self.use_redis:
            reason = "with memory_max_bytes 0 the cache would keep nothing"
            yield (
                "use_redis",
                f"{reason}: set use_redis: true, memory_max_bytes above 0, or enabled: false",
            )
        # The Redis level is split over CACHE_SHARDS shards, each of which must hold the
        # largest entry.
        least = CACHE_SHARDS * self.max_entry_bytes
        if self.use_redis and self.redis_max_bytes < least:
            yield (
                "redis_max_bytes",
                f"must be at least {CACHE_SHARDS} x max_entry_bytes ({least}): the level is "
                f"split into {CACHE_SHARDS} shards, each holding entries up to max_entry_bytes",
            )


@dataclass(frozen=True, kw_only=True)
class EmbeddingsBatchingSpec(Spec):
    enabled: bool = field(default=False, metadata=checks(Bool()))
    window_ms: float = field(
        default=5.0, metadata=checks(Number(positive=True, max=_WINDOW_MS_MAX))
    )
    max_inputs: int = field(default=256, metadata=checks(Int(min=1, max=_EMBEDDING_INPUTS_MAX)))


@dataclass(frozen=True, kw_only=True)
class BatchingSpec(Spec):
    coalesce: bool = field(default=True, metadata=checks(Bool()))
    coalesce_billing: CoalesceBilling = field(
        default="first", metadata=checks(OneOf(*get_args(CoalesceBilling)))
    )
    embeddings: EmbeddingsBatchingSpec = field(
        default_factory=EmbeddingsBatchingSpec, metadata=checks(Record(EmbeddingsBatchingSpec))
    )


# Rate limits (`rate_limits:`); teams and models named are checked by config/ratelimits.py.
_PER_MINUTE = Int(min=1, max=MAX_EXACT - 1)


@dataclass(frozen=True, kw_only=True)
class RateLimitRuleSpec(Spec):
    name: str = field(metadata=checks(_RULE_NAME, doc="Unique among the rules."))
    per: RateLimitPer = field(
        metadata=checks(
            OneOf(*get_args(RateLimitPer)),
            doc="Counted separately for each key, team or model (the name a request sends).",
        )
    )
    requests_per_minute: int | None = field(default=None, metadata=checks(_PER_MINUTE))
    tokens_per_minute: int | None = field(default=None, metadata=checks(_PER_MINUTE))
    teams: tuple[str, ...] = field(default=(), metadata=checks(_any_of("team")))
    models: tuple[str, ...] = field(default=(), metadata=checks(_any_of("model")))

    def problems(self) -> Iterator[Problem]:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            yield ("requests_per_minute", "give requests_per_minute, tokens_per_minute or both")


@dataclass(frozen=True, kw_only=True)
class RateLimitsSpec(Spec):
    local_share: float = field(default=0.05, metadata=checks(Number(positive=True, max=0.5)))
    rules: list[RateLimitRuleSpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(RateLimitRuleSpec)))
    )


@dataclass(frozen=True, kw_only=True)
class RootSpec(Spec):
    server: ServerSpec = field(default_factory=ServerSpec, metadata=checks(Record(ServerSpec)))
    store: StoreSpec = field(default_factory=StoreSpec, metadata=checks(Record(StoreSpec)))
    providers: dict[str, ProviderSpec | None] = field(
        metadata=checks(Entries(Record(ProviderSpec), name=_PROVIDER_NAME, required_one="provider"))
    )
    models: dict[str, ModelSpec | None] = field(
        metadata=checks(Entries(Record(ModelSpec), name=Str(), required_one="model"))
    )
    # Lenient, so that a broken shared cost doesn't lose the overrides (and report every
    # overridden model as unpriced).
    pricing: PricingSpec = field(
        default_factory=PricingSpec, metadata=checks(Record(PricingSpec, lenient=True))
    )
    teams: dict[str, TeamSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(TeamSpec), name=_TEAM_NAME))
    )
    budgets: BudgetsSpec = field(default_factory=BudgetsSpec, metadata=checks(Record(BudgetsSpec)))
    rate_limits: RateLimitsSpec = field(
        default_factory=RateLimitsSpec, metadata=checks(Record(RateLimitsSpec))
    )
    alerts: AlertsSpec = field(default_factory=AlertsSpec, metadata=checks(Record(AlertsSpec)))
    aggregator: AggregatorSpec = field(
        default_factory=AggregatorSpec, metadata=checks(Record(AggregatorSpec))
    )
    forecasts: ForecastsSpec = field(
        default_factory=ForecastsSpec, metadata=checks(Record(ForecastsSpec))
    )
    anomalies: AnomaliesSpec = field(
        default_factory=AnomaliesSpec, metadata=checks(Record(AnomaliesSpec))
    )
    tiers: dict[str, TierSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(TierSpec), name=Str()))
    )
    cache: CacheSpec = field(default_factory=CacheSpec, metadata=checks(Record(CacheSpec)))
    batching: BatchingSpec = field(
        default_factory=BatchingSpec, metadata=checks(Record(BatchingSpec))
    )
    # Governance (`config/policyspec.py`): model blocks, approvals above a size, required tags.
    policies: PoliciesSpec = field(
        default_factory=PoliciesSpec, metadata=checks(Record(PoliciesSpec))
    )


def validate(raw: object, problems: list[Problem]) -> RootSpec | None:
    """Check a whole parsed document; None when it is too broken to compile at all."""
    root = Record(RootSpec, lenient=True)(raw, "", problems)
    return None if isinstance(root, Invalid) else root
