"""The frozen runtime config: what `compile` produces from validated YAML and requests read.

A request reads `LiveConfig.current` once and uses that snapshot to the end, so a reload never
changes the rules under a request in flight. Nothing here is mutable; a reload builds a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.types import Principal

ProviderKind = Literal["openai", "litellm"]
AuthStyle = Literal["bearer", "api-key", "none"]
Strategy = Literal["weighted", "ordered", "least-busy", "cheapest"]


@dataclass(frozen=True, slots=True)
class Price:
    """Prices in nano-USD per 1M tokens, so every published price is an exact integer.

    `prompt_tokens` include `cached_prompt_tokens` and `completion_tokens` include
    `reasoning_tokens` (OpenAI's usage semantics); `pricing.cost` bills each part at its price.
    """

    input_per_m: int
    output_per_m: int
    cached_input_per_m: int
    reasoning_per_m: int
    source: Literal["table", "override"] = "table"


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


@dataclass(frozen=True, slots=True)
class DeclaredKey:
    """A virtual key from the YAML: only its sha256 hex digest is kept."""

    key_hash: str
    principal: Principal


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    admin_key_hash: str | None = field(default=None, repr=False)  # sha256 hex of the admin key
    key_cache_ttl_s: float = 30.0
    access_log: bool = True
    default_max_tokens: int = 4096  # output cap sent upstream when a request sets none


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = field(default="memory://", repr=False)  # may hold a password


@dataclass(frozen=True, slots=True)
class TeamConfig:
    name: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # file path, or "<embedded default>"
    server: ServerConfig
    store: StoreConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelRoute]
    teams: Mapping[str, TeamConfig]
    keys: tuple[DeclaredKey, ...] = ()
