"""Plain data that crosses module boundaries on the request path.

Principals (who is calling), usage (what was consumed) and spend records (what it cost). Money is
integer nano-USD (1 USD = 1_000_000_000) everywhere it is stored or summed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson

NANO_PER_USD = 1_000_000_000
# Budget scripts compare amounts as Lua numbers (doubles): totals per counter are exact below
# this, 2^53 nano-USD ~ 9 million USD (and 9e15 tokens), so no budget limit may reach it.
MAX_EXACT = 2**53

EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


def usd_to_nano(usd: float | str) -> int:
    """Convert a USD amount given at the edge (YAML, a header) to nano-USD, rounding half up."""
    from decimal import ROUND_HALF_UP, Decimal

    return int((Decimal(str(usd)) * NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def nano_to_usd_str(nano: int) -> str:
    """Render nano-USD exactly as a decimal string (no float rounding): 1234 -> '0.000001234'."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def exact_decimal(numerator: int, exponent: int) -> str:
    """`numerator / 10**exponent` exactly, shortest, with at least one fractional digit (a
    reader of the text types it as a decimal): (25, 1) -> '2.5', (3, 0) -> '3.0'."""
    sign = "-" if numerator < 0 else ""
    whole, frac = divmod(abs(numerator), 10**exponent)
    digits = f"{frac:0{exponent}d}".rstrip("0") if exponent else ""
    return f"{sign}{whole}.{digits or '0'}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is billed to. `key_id` is a short public id of the key, never the secret."""

    key_id: str
    team: str
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    name: str | None = None


@dataclass(slots=True)
class Usage:
    """Tokens consumed by one upstream call. `estimated` is set when we counted with tiktoken."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class SpendEvent:
    """One entry of the spend ledger: what a request (or a posted external cost) cost, and why.

    Producer (the settle script) and consumer (the aggregator) share only this schema and the
    key names in `rediskeys`. In the Redis stream it is a flat map of strings (`to_fields`).
    `list_cost_nano` is what the request would have cost at the requested model's list price
    with no optimization; `list_cost_nano - cost_nano` is the saving, credited to `optimization`.
    """

    event_id: str  # unique; settling twice with the same id counts once
    ts_ms: int  # UTC epoch milliseconds when the request finished
    team: str
    # "request" | "external" (a cost posted through the admin API) | "import" (a charge from a
    # FOCUS file loaded by `spendgate import`: usage or cache hits, counted as requests are)
    kind: str = "request"
    request_id: str = ""
    key_id: str = ""
    project: str | None = None
    environment: str | None = None
    workload: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    endpoint: str = ""
    requested_model: str = ""
    served_model: str = ""
    provider: str = ""
    deployment: str = ""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    cost_nano: int = 0
    list_cost_nano: int = 0
    optimization: str | None = None  # "cache" | "tiering" | "downgrade" | "coalescing" | ...
    cache: str = "none"  # "hit" | "miss" | "bypass" | "none"
    route: str | None = None  # the routing decision, for explainability
    latency_ms: float = 0.0
    status: int = 200
    outcome: str = "ok"  # ok | error | client_disconnected | upstream_broken
    revenue_nano: int | None = None
    description: str | None = None  # external costs: what it was
    # External costs: their FOCUS charge and service classification, as the JSON of
    # `gateway.analytics.taxonomy.ChargeClass` (None on requests and on older posts).
    charge: str | None = None
    # How many requests (cache hits; posted costs, for an external cost) an imported aggregate
    # stands for: 0 when its source does not say (a FOCUS usage row). None: one, a live event.
    units: int | None = None
    # Signals for the recommendations (`gateway.cache.fingerprint`), hashes and a shape only:
    # the request's fingerprint (identical requests share it), its long prompt's prefix
    # fingerprint, and "simple" / "tools" / "json" / "tools+json". None when not recorded.
    fingerprint: str | None = None
    prefix: str | None = None
    shape: str | None = None

    def to_fields(self) -> dict[str, str]:
        flat = iter(self.to_flat())
        return dict(zip(flat, flat, strict=True))

    def to_flat(self) -> list[str]:
        """`to_fields` as one list, each name followed by its value (what the settle script
        appends to the stream): text as it is, numbers in decimal, a flag as "1" / "0", the
        tags as JSON, None left out. Built on every settle, so field by field rather than by a
        loop over the fields (tests/test_types.py holds it to that rule for every field)."""
        tags = orjson.dumps(dict(self.tags)).decode() if self.tags else "{}"
        # fmt: off
        flat = [
            "event_id", self.event_id, "ts_ms", str(self.ts_ms), "team", self.team,
            "kind", self.kind, "request_id", self.request_id, "key_id", self.key_id,
        ]
        if self.project is not None:
            flat += ("project", self.project)
        if self.environment is not None:
            flat += ("environment", self.environment)
        if self.workload is not None:
            flat += ("workload", self.workload)
        flat += (
            "tags", tags, "endpoint", self.endpoint,
            "requested_model", self.requested_model, "served_model", self.served_model,
            "provider", self.provider, "deployment", self.deployment,
            "prompt_tokens", str(self.prompt_tokens),
            "cached_prompt_tokens", str(self.cached_prompt_tokens),
            "completion_tokens", str(self.completion_tokens),
            "reasoning_tokens", str(self.reasoning_tokens),
            "tokens_estimated", "1" if self.tokens_estimated else "0",
            "cost_nano", str(self.cost_nano), "list_cost_nano", str(self.list_cost_nano),
        )
        # fmt: on
        if self.optimization is not None:
            flat += ("optimization", self.optimization)
        flat += ("cache", self.cache)
        if self.route is not None:
            flat += ("route", self.route)
        flat += ("latency_ms", str(self.latency_ms), "status", str(self.status))
        flat += ("outcome", self.outcome)
        if self.revenue_nano is not None:
            flat += ("revenue_nano", str(self.revenue_nano))
        if self.description is not None:
            flat += ("description", self.description)
        if self.charge is not None:
            flat += ("charge", self.charge)
        if self.units is not None:
            flat += ("units", str(self.units))
        if self.fingerprint is not None:
            flat += ("fingerprint", self.fingerprint)
        if self.prefix is not None:
            flat += ("prefix", self.prefix)
        if self.shape is not None:
            flat += ("shape", self.shape)
        return flat

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> SpendEvent:
        """The event a stream entry holds; unknown fields are ignored (a newer writer's)."""
        parsers = _field_parsers()
        kwargs: dict[str, object] = {}
        for k, v in raw.items():
            found = parsers.get(k)
            if found is not None:
                name, parse = found
                text = v.decode() if isinstance(v, bytes) else str(v)
                kwargs[name] = text if parse is None else parse(text)
        return cls(**kwargs)  # type: ignore[arg-type]


@functools.cache
def _field_parsers() -> dict[str | bytes, tuple[str, Callable[[str], object] | None]]:
    """A stream field's name, as text and as bytes (what Redis replies hold) -> the SpendEvent
    field of that name and how its text becomes the value (None: it stays text). Worked out
    once: the aggregator parses every event."""
    import dataclasses

    def tags(text: str) -> object:
        return MappingProxyType(orjson.loads(text))

    def flag(text: str) -> bool:
        return text == "1"

    by_type: dict[object, Callable[[str], object]] = {
        "int": int,
        "int | None": int,
        "float": float,
        "bool": flag,
    }
    found: dict[str | bytes, tuple[str, Callable[[str], object] | None]] = {}
    for f in dataclasses.fields(SpendEvent):
        entry = (f.name, tags if f.name == "tags" else by_type.get(f.type))
        found[f.name] = found[f.name.encode()] = entry
    return found
