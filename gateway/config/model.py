"""The frozen runtime config: what `compile` produces from validated YAML and requests read.

A request reads `LiveConfig.current` once and uses that snapshot to the end, so a reload never
changes the rules under a request in flight. Nothing here is mutable; a reload builds a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from gateway.config.policies import PoliciesConfig
from gateway.pricing.price import Price
from gateway.types import Principal

ProviderKind = Literal["openai", "litellm"]
AuthStyle = Literal["bearer", "api-key", "none"]
Strategy = Literal["weighted", "ordered", "least-busy", "cheapest"]
Period = Literal["daily", "weekly", "monthly", "total"]
BudgetScope = Literal["key", "team", "project", "tag"]
OnExceed = Literal["block", "downgrade", "alert"]
AllocationMethod = Literal["proportional", "even", "fixed"]
OnUnavailable = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 60.0
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    failure_threshold: int = 5
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: ProviderKind
    base_url: str  # without trailing slash, including the version path: http://host/v1
    api_key: str | None = field(default=None, repr=False)
    auth: AuthStyle = "bearer"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    api_version: str | None = None  # Azure OpenAI: sent as ?api-version=
    litellm_provider: str | None = None  # kind litellm: "anthropic", "bedrock", ...
    timeouts: Timeouts = Timeouts()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str  # unique across the config; defaults to "<provider>/<model>"
    provider: str
    model: str  # the upstream's model name
    weight: int
    price: Price


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str  # the model name clients send and /v1/models lists
    deployments: tuple[Deployment, ...]
    strategy: Strategy = "weighted"
    retries: int = 2  # extra attempts after the first, across deployments
    backoff_s: float = 0.05  # base of the exponential backoff between attempts
    owned_by: str = "spendgate"
    # Prompt caps. A request asking for more output than `max_tokens_cap` (max_tokens,
    # max_completion_tokens or max_output_tokens), or whose prompt counts more tokens than
    # `max_prompt_tokens`, is refused with a 400; a request that sets no output limit is sent
    # with the cap (instead of server.default_max_tokens). See `gateway.routing.caps`.
    max_tokens_cap: int | None = None
    max_prompt_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class DeclaredKey:
    """A virtual key from the YAML: only its sha256 hex digest is kept."""

    key_hash: str
    principal: Principal
    role: Literal["client", "reader"] = "client"  # a reader key only reads its team's spend


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    admin_key_hash: str | None = field(default=None, repr=False)  # sha256 hex of the admin key
    # sha256 hex of the read-only reporting key (reports and the dashboard, every team)
    reporting_key_hash: str | None = field(default=None, repr=False)
    key_cache_ttl_s: float = 30.0
    access_log: bool = True
    default_max_tokens: int = 4096  # output cap sent upstream when a request sets none
    # On SIGTERM: how long requests and streams in flight may take to finish before streams
    # still open are ended with an error event (and billed for what they generated).
    drain_s: float = 60.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = field(default="local://", repr=False)  # may hold a password
    data_dir: str = "var/store"  # local://: the server's data (append-only file), lock, socket
    # When Redis cannot be reached: "open" serves without budget checks (events are spooled),
    # "closed" refuses requests with 503.
    on_unavailable: OnUnavailable = "open"
    spool_dir: str = "var/spool"  # local append-only spool for spend events during an outage
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_fsync_interval_s: float = 1.0

    @property
    def embedded(self) -> bool:
        """The in-process store (`memory://`), which lives and dies with its process: commands
        reach it through the admin API of the gateway that runs it."""
        return urlsplit(self.url).scheme.lower() == "memory"

    @property
    def local(self) -> bool:
        """The server spendgate runs itself (`local://`), its data in `data_dir`."""
        return urlsplit(self.url).scheme.lower() == "local"


@dataclass(frozen=True, slots=True)
class TeamConfig:
    name: str
    description: str | None = None
    # Spend of a shared team (a platform team, untagged traffic) is not billed to it in
    # chargeback: it is allocated over the other teams by `Config.shared_spend_allocation`.
    shared: bool = False
    revenue_per_request_nano: int | None = None  # for inference margin
    monthly_revenue_nano: int | None = None
    # Business units (orders, documents, ...) a month, for the scorecard's cost per unit.
    units_name: str | None = None
    monthly_units: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """One budget. Every budget belongs to a team: the team is its Redis Cluster slot, so one
    Lua call can reserve against all budgets of a request."""

    name: str  # unique across the config (and admin-created budgets); [A-Za-z0-9_.-]+
    team: str
    scope: BudgetScope  # what within the team it limits
    match: str | None  # key: key id ("key_..."); project: project name; tag: "k=v"; team: None
    period: Period  # calendar periods in UTC; weeks start on Monday (ISO weeks)
    limit_nano: int | None  # USD limit in nano-USD; at least one of the two limits is set
    limit_tokens: int | None
    on_exceed: OnExceed = "block"
    downgrade_to: str | None = None  # an exposed model name, required for on_exceed=downgrade
    thresholds: tuple[int, ...] = (50, 75, 90, 100)  # percent; each alerts once per period
    source: Literal["config", "admin"] = "config"
    # Its hash, computed once: a request's budgets key its lease and its settle's layout, and
    # a frozen dataclass would otherwise hash all its fields at every lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.name, self.team, self.scope, self.match, self.period, self.limit_nano)
        more = (self.limit_tokens, self.on_exceed, self.downgrade_to, self.thresholds, self.source)
        object.__setattr__(self, "_hash", hash((*fields, *more)))

    def __hash__(self) -> int:
        return self._hash


# --- Rate limits: requests and tokens per minute, per key, team or model. ------------------------
RateLimitPer = Literal["key", "team", "model"]


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """One `rate_limits.rules[]` entry: each key, team or model (`per`) among the requests it
    applies to (its `teams` and `models`; empty: all) has `requests` and/or `tokens` a minute."""

    name: str
    per: RateLimitPer
    requests: int | None = None  # per minute
    tokens: int | None = None  # per minute
    teams: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()  # the model names requests name (models and tiers)


@dataclass(frozen=True, slots=True)
class RateLimitsConfig:
    rules: tuple[RateLimitRule, ...] = ()
    # Each process takes this fraction of what a limit has left in the shared count at once
    # and admits requests against it locally (ratelimits/limiter.py).
    local_share: float = 0.05


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    rules: tuple[BudgetConfig, ...] = ()
    # A reservation not settled by then (its replica crashed) is released by the next script
    # that touches the team's budgets.
    reservation_ttl_s: float = 900.0
    # Far from their limits, each process reserves this fraction of what the tightest budget
    # has left at once and spends it locally for up to lease_window_s (budgets/leases.py).
    lease_fraction: float = 0.01
    lease_window_s: float = 5.0
    # Alert thresholds (percent) of a budget that sets none, admin budgets included.
    thresholds: tuple[int, ...] = (50, 75, 90, 100)


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    url: str = field(repr=False)  # may embed a token (Slack)
    events: tuple[str, ...] = (
        "budget_threshold",
        "budget_exceeded",
        "budget_forecast",
        "anomaly",
        "review",
    )


@dataclass(frozen=True, slots=True)
class ReviewSchedule:
    """The weekly review digest: posted from `weekday` (0: Monday) at `hour` UTC on."""

    weekday: int = 0
    hour: int = 9


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    webhooks: tuple[Webhook, ...] = ()
    cooldown_s: float = 3600.0  # the same alert (kind + subject) is sent at most once per cooldown
    timeout_s: float = 5.0
    review: ReviewSchedule | None = None  # None: no weekly digest is posted


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    batch_size: int = 500
    block_ms: int = 1000
    claim_idle_s: float = 60.0  # pending entries idle this long are reclaimed from dead consumers
    archive_dir: str = "var/archive"  # cold tier: <dir>/<team>/<YYYY-MM-DD>.jsonl.gz
    stream_retention_s: float = 48 * 3600.0  # archived and acked events older than this are trimmed
    # After applying less than a full batch, wait this long before reading again, so a trickle
    # of events is applied in fewer, larger batches (each apply has a fixed cost).
    linger_ms: int = 10


@dataclass(frozen=True, slots=True)
class ForecastsConfig:
    history_days: int = 120  # complete days of daily rollups a forecast is fitted on
    interval_s: float = 900.0  # how often the aggregator checks budgets against their forecasts
    alert_min_history_days: int = 14  # no budget_forecast alert on less history than this


Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class SeverityLevel:
    """Reached when an anomaly's deviation (robust z) and its dollar excess both reach it."""

    name: Severity
    z: float
    min_nano: int


# medium / high / critical unless the config says otherwise; low is (anomalies.z, min_impact).
DEFAULT_SEVERITY_LEVELS = (
    SeverityLevel("medium", 4.0, 25_000_000_000),
    SeverityLevel("high", 6.0, 100_000_000_000),
    SeverityLevel("critical", 10.0, 500_000_000_000),
)


@dataclass(frozen=True, slots=True)
class AnomalyThresholds:
    """One team's detection thresholds: `levels` from low (the alerting threshold and the
    minimum dollar impact) to critical, each at least as high as the one before."""

    enabled: bool = True
    levels: tuple[SeverityLevel, ...] = (
        SeverityLevel("low", 3.0, 5_000_000_000),
        *DEFAULT_SEVERITY_LEVELS,
    )

    @property
    def z(self) -> float:
        return self.levels[0].z

    @property
    def min_impact_nano(self) -> int:
        return self.levels[0].min_nano


# Fine buckets are kept (in Redis and in the detector's memory) for what the baselines read:
# the seasonal weeks plus today, or the drift window, never more than this many buckets.
MAX_HISTORY_BUCKETS = 8064  # four weeks of 5-minute buckets


@dataclass(frozen=True, slots=True)
class AnomaliesConfig:
    """Spend anomaly detection on the aggregator (gateway.analytics.anomaly explains it)."""

    enabled: bool = True
    bucket_s: int = 300  # divides 3600
    seasonal_weeks: int = 3  # weeks of history an hour-of-week baseline reads (0: never)
    cold_start_buckets: int = 36  # history a series needs before it may alert
    cold_start_min_nano: int | None = None  # before that, alert only above this excess
    resolve_after_buckets: int = 6  # buckets back within the band that resolve an anomaly
    drop_buckets: int = 3  # buckets without spend that make a busy team's drop
    drift_days: int = 7  # daily totals the drift test reads
    drift_min_rise: float = 0.25  # relative rise over the drift window that is drift
    expected_suppress_s: float = 30 * 86400.0  # how long `expected` feedback silences a pattern
    defaults: AnomalyThresholds = AnomalyThresholds()
    teams: Mapping[str, AnomalyThresholds] = field(default_factory=dict)

    def thresholds(self, team: str) -> AnomalyThresholds:
        return self.teams.get(team, self.defaults)

    @property
    def history_buckets(self) -> int:
        """How many buckets of a series are kept: enough for the weekly baseline (its weeks
        plus today), the daily one (a week plus today) and the drift window."""
        days = max(7 * self.seasonal_weeks, 7, self.drift_days) + 1
        return min(-(-days * 86400 // self.bucket_s), MAX_HISTORY_BUCKETS)


@dataclass(frozen=True, slots=True)
class Allocation:
    method: AllocationMethod = "proportional"
    weights: Mapping[str, int] = field(default_factory=dict)  # team -> weight, for "fixed"


@dataclass(frozen=True, slots=True)
class SharedCost:
    """A cost outside the request ledger (platform fee, cache infrastructure) shared by teams."""

    name: str
    monthly_nano: int
    allocation: Allocation = Allocation()


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # file path, or "<embedded default>"
    server: ServerConfig
    store: StoreConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelRoute]
    teams: Mapping[str, TeamConfig]
    keys: tuple[DeclaredKey, ...] = ()
    budgets: BudgetsConfig = BudgetsConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    alerts: AlertsConfig = AlertsConfig()
    aggregator: AggregatorConfig = AggregatorConfig()
    forecasts: ForecastsConfig = ForecastsConfig()
    anomalies: AnomaliesConfig = AnomaliesConfig()
    shared_costs: tuple[SharedCost, ...] = ()
    shared_spend_allocation: Allocation = Allocation()
    # Defined below with the other optimizer sections, hence the factories.
    tiers: Mapping[str, TierConfig] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=lambda: CacheConfig())
    batching: BatchingConfig = field(default_factory=lambda: BatchingConfig())
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)  # config/policies.py


# --- Cost optimizers: tiers and cascades, the response cache, coalescing and batching. ---------
#
# YAML shapes (the schema in `config/schema.py` mirrors these; every key is optional unless noted):
#
#   tiers:
#     auto:                                  # an exposed model name clients send
#       candidates: [gpt-4o-mini, gpt-4o]    # required; exposed model names, cheapest first
#       default: gpt-4o-mini                 # required; one of the candidates
#       rules:                               # first match wins; all conditions of a rule must hold
#         - name: premium-hint
#           use: gpt-4o                      # one of the candidates
#           when: {hint: [premium]}
#         - name: long-prompt
#           use: gpt-4o
#           when: {prompt_tokens_gt: 4000}
#         - name: budget-saver
#           use: gpt-4o-mini
#           when: {budget_used_pct_gte: 90}
#       cascade:                             # optional; absent means no cascade
#         checks: [length, invalid_json, empty, refusal]
#         stream: false
#
#   cache:
#     enabled: true
#     memory_max_bytes: 16777216
#     max_entry_bytes: 1048576
#     use_redis: true
#     redis_max_bytes: 268435456
#     default_ttl_s: 3600
#     hit_cost_fraction: 0.0
#     routes:                                # keyed by exposed model (or tier) name
#       gpt-4o-mini: {mode: always, ttl_s: 600, shared: true}
#
#   batching:
#     coalesce: true
#     coalesce_billing: first                # or split
#     embeddings: {enabled: false, window_ms: 5, max_inputs: 256}
#
#   models.<name>.max_tokens_cap / models.<name>.max_prompt_tokens: see ModelRoute.

TierHint = Literal["economy", "standard", "premium"]
CascadeCheck = Literal["length", "invalid_json", "empty", "refusal"]
CacheMode = Literal["deterministic", "always", "off"]
CoalesceBilling = Literal["first", "split"]

TIER_HINTS: tuple[TierHint, ...] = ("economy", "standard", "premium")
CASCADE_CHECKS: tuple[CascadeCheck, ...] = ("length", "invalid_json", "empty", "refusal")


@dataclass(frozen=True, slots=True)
class TierCondition:
    """When a tier rule applies: every condition that is set must hold (an empty one always
    does). Tuples mean "is one of"; a request without the attribute (no hint, no project, no
    budget) never matches a condition on it."""

    prompt_tokens_gt: int | None = None
    prompt_tokens_lte: int | None = None
    hint: tuple[TierHint, ...] = ()  # from header x-sg-tier or metadata.sg_tier
    team: tuple[str, ...] = ()
    project: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()
    budget_used_pct_gte: float | None = None  # the tightest applicable budget, 0..100+
    has_tools: bool | None = None
    has_response_format: bool | None = None  # a JSON mode / schema was asked for
    has_code: bool | None = None  # code fences or code tokens in the last user message
    messages_gt: int | None = None  # conversation length


@dataclass(frozen=True, slots=True)
class TierRule:
    name: str  # unique within its tier; shown in x-sg-route and spend events
    use: str  # one of the tier's candidates
    when: TierCondition = TierCondition()


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    """Try the decided candidate, escalate to the next (better) candidate while the answer fails
    one of `checks`. Streaming requests cascade only when `stream` is set: the attempts are
    then made without streaming and the final answer is replayed as SSE (no early first byte)."""

    checks: tuple[CascadeCheck, ...] = CASCADE_CHECKS
    stream: bool = False


@dataclass(frozen=True, slots=True)
class TierConfig:
    """An exposed model name whose requests are routed to one of `candidates` per request.
    Candidates are exposed model names (keys of `Config.models`), never other tiers; a tier may
    share its name with a model it tiers (e.g. tier `gpt-4o` over [gpt-4o-mini, gpt-4o])."""

    name: str
    candidates: tuple[str, ...]  # ordered cheapest -> best
    default: str  # one of the candidates
    rules: tuple[TierRule, ...] = ()
    cascade: CascadeConfig | None = None


@dataclass(frozen=True, slots=True)
class CacheRoutePolicy:
    """How one exposed model (or tier) uses the response cache.

    `deterministic`: only requests with temperature 0 or a seed (and n <= 1); `always`: any
    request (for routes whose answers need not vary); `off`: never. `shared` drops the per-team
    namespace, so every team reads and writes the same entries. `ttl_s` None: the default TTL.
    """

    mode: CacheMode = "deterministic"
    ttl_s: float | None = None
    shared: bool = False


DEFAULT_CACHE_POLICY = CacheRoutePolicy()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    memory_max_bytes: int = 16 * 1024 * 1024  # the in-process LRU, 0 disables that level
    max_entry_bytes: int = 1024 * 1024  # larger answers are never cached
    use_redis: bool = True  # second level, shared by replicas
    redis_max_bytes: int = 256 * 1024 * 1024  # the second level's bound (entries and keys)
    default_ttl_s: float = 3600.0
    # A hit is billed at this fraction of the list cost of the answer it replays (internal
    # chargeback of the cache); 0 bills hits at nothing. 0 <= fraction <= 1.
    hit_cost_fraction: float = 0.0
    routes: Mapping[str, CacheRoutePolicy] = field(default_factory=dict)

    def policy_for(self, model: str) -> CacheRoutePolicy:
        """The policy of an exposed model or tier name; routes not listed use the default."""
        return self.routes.get(model, DEFAULT_CACHE_POLICY)

    def ttl_for(self, policy: CacheRoutePolicy) -> float:
        return self.default_ttl_s if policy.ttl_s is None else policy.ttl_s


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    # Identical deterministic non-streaming requests in flight at once share one upstream call.
    coalesce: bool = True
    # Who pays the shared call: the first caller ("first": the others are billed 0 and record
    # the saving) or everyone equally ("split").
    coalesce_billing: CoalesceBilling = "first"
    # Concurrent embedding requests with identical parameters within the window are merged
    # into one upstream call of at most `embeddings_max_inputs` inputs.
    embeddings_enabled: bool = False
    embeddings_window_s: float = 0.005
    embeddings_max_inputs: int = 256
