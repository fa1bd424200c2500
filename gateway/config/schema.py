"""The YAML shape of gateway.yaml: every section and key, its type, default and limits.

`validate(raw)` checks a parsed, env-substituted document against it and returns typed specs
for `compile`, collecting every problem as (key path, reason). A new section is one spec
dataclass here plus one field on `RootSpec`; the generic checks do the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar, get_args
from urllib.parse import urlsplit

from gateway.config.model import AuthStyle, ProviderKind, Strategy
from gateway.errors import redact

Problem = tuple[str, str]  # (key path, reason)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Invalid:
    """Marks a value that failed its check (its problem is already recorded)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = Invalid()


class Substituted(str):
    """A string that came (partly) from `${VAR}` substitution: never echoed in a problem."""

    variables: tuple[str, ...]

    def __new__(cls, text: str, variables: tuple[str, ...]) -> Substituted:
        value = super().__new__(cls, text)
        value.variables = variables
        return value

    @property
    def origin(self) -> str:
        return ", ".join(f"${{{name}}}" for name in self.variables)


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def did_you_mean(word: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_NAMES: Final[Mapping[type, str]] = {
    dict: "mapping",
    list: "list",
    type(None): "null",
    datetime.date: "date",
    datetime.datetime: "timestamp",
}


def describe(value: object, *, secret: bool = False) -> str:
    """How a problem names a bad value: its type, and its text only when that is safe."""
    if isinstance(value, Substituted):
        return f"a value from {value.origin}"
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    if secret or value is None or isinstance(value, dict | list):
        return kind
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {redact(shown)}"


class Check(Protocol[T_co]):
    """Validates one value at `path`: the clean value, or INVALID after recording why."""

    def __call__(self, value: object, path: str, problems: list[Problem]) -> T_co | Invalid: ...


def _fail(problems: list[Problem], path: str, reason: str) -> Invalid:
    problems.append((path, reason))
    return INVALID


class Str:
    def __init__(
        self,
        *,
        allow_empty: bool = False,
        pattern: str | None = None,
        rule: str = "",
        secret: bool = False,
    ) -> None:
        self.allow_empty = allow_empty
        self.pattern = re.compile(pattern) if pattern else None
        self.rule = rule  # says what `pattern` means, for the problem
        self.secret = secret

    def __call__(self, value: object, path: str, problems: list[Problem]) -> str | Invalid:
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, int | float | datetime.date) and not self.secret:
                hint = " (quote it in YAML to make it text)"
            return _fail(problems, path, f"expected a string, got {describe(value)}{hint}")
        if not value and not self.allow_empty:
            return _fail(problems, path, "must not be empty")
        if self.pattern and value and not self.pattern.fullmatch(value):
            got = describe(value, secret=self.secret)
            return _fail(problems, path, f"{self.rule}, got {got}")
        return str(value)  # a plain str: the runtime config never carries `Substituted`


class OneOf:
    def __init__(self, *choices: str) -> None:
        self.choices = list(choices)

    def __call__(self, value: object, path: str, problems: list[Problem]) -> str | Invalid:
        if isinstance(value, str) and value in self.choices:
            return str(value)
        expected = ", ".join(repr(c) for c in self.choices)
        hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
        return _fail(problems, path, f"expected one of {expected}, got {describe(value)}{hint}")


class Int:
    def __init__(self, *, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max

    def __call__(self, value: object, path: str, problems: list[Problem]) -> int | Invalid:
        # Env vars are always text, so `${PORT}` may stand for a number; YAML text may not.
        if isinstance(value, Substituted) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return _fail(problems, path, f"expected an integer, got {describe(value)}")
        return INVALID if _out_of_range(value, self.min, self.max, path, problems) else value


class Number:
    def __init__(self, *, min: float | None = None, positive: bool = False) -> None:
        self.min, self.positive = min, positive

    def __call__(self, value: object, path: str, problems: list[Problem]) -> float | Invalid:
        if isinstance(value, Substituted):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _fail(problems, path, f"expected a number, got {describe(value)}")
        if not math.isfinite(value):
            return _fail(problems, path, f"expected a finite number, got {describe(value)}")
        if self.positive and value <= 0:
            return _fail(problems, path, f"must be greater than 0, got {describe(value)}")
        number = float(value)
        return INVALID if _out_of_range(number, self.min, None, path, problems) else number


def _out_of_range(
    value: float, low: float | None, high: float | None, path: str, problems: list[Problem]
) -> bool:
    if low is not None and value < low:
        problems.append((path, f"must be at least {low:g}, got {value:g}"))
        return True
    if high is not None and value > high:
        problems.append((path, f"must be at most {high:g}, got {value:g}"))
        return True
    return False


class Bool:
    _WORDS: Final[Mapping[str, bool]] = {
        **dict.fromkeys(("true", "yes", "on", "1"), True),
        **dict.fromkeys(("false", "no", "off", "0"), False),
    }

    def __call__(self, value: object, path: str, problems: list[Problem]) -> bool | Invalid:
        if isinstance(value, Substituted) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            return _fail(problems, path, f"expected true or false, got {describe(value)}")
        return value


class Url:
    """An absolute URL with one of `schemes`; http(s) URLs lose their trailing slash."""

    def __init__(self, *schemes: str, secret: bool = False) -> None:
        self.schemes = schemes
        self.secret = secret  # store URLs may carry a password

    def __call__(self, value: object, path: str, problems: list[Problem]) -> str | Invalid:
        if not isinstance(value, str) or not value:
            return _fail(problems, path, f"expected a URL, got {describe(value)}")
        parts = urlsplit(value)
        wanted = ", ".join(f"{s}://" for s in self.schemes)
        got = describe(value, secret=self.secret)
        if parts.scheme not in self.schemes:
            return _fail(problems, path, f"expected a URL starting with {wanted}; got {got}")
        if parts.scheme in ("http", "https") and not parts.hostname:
            return _fail(problems, path, f"expected a URL with a host name, got {got}")
        return str(value).rstrip("/") if parts.scheme in ("http", "https") else str(value)


class StrMap:
    """A mapping of non-empty string keys to string values (headers, tags)."""

    def __init__(self, key: Str, value: Str) -> None:
        self.key, self.value = key, value

    def __call__(
        self, value: object, path: str, problems: list[Problem]
    ) -> dict[str, str] | Invalid:
        if not isinstance(value, dict):
            return _fail(problems, path, f"expected a mapping, got {describe(value)}")
        out: dict[str, str] = {}
        before = len(problems)
        for key, item in value.items():
            name = self.key(key, join(path, key), problems)
            checked = self.value(item, join(path, key), problems)
            if not isinstance(name, Invalid) and not isinstance(checked, Invalid):
                out[name] = checked
        return out if len(problems) == before else INVALID


class ListOf(Generic[T]):
    """A list; an item that fails its check stays as None so later items keep their index."""

    def __init__(self, item: Check[T], *, required_one: str | None = None) -> None:
        self.item = item
        self.required_one = required_one  # "deployment": at least one must be listed

    def __call__(
        self, value: object, path: str, problems: list[Problem]
    ) -> list[T | None] | Invalid:
        if not isinstance(value, list):
            return _fail(problems, path, f"expected a list, got {describe(value)}")
        if self.required_one and not value:
            return _fail(problems, path, f"must list at least one {self.required_one}")
        out: list[T | None] = []
        for i, item in enumerate(value):
            checked = _check(self.item, item, f"{path}[{i}]", problems)
            out.append(None if isinstance(checked, Invalid) else checked)
        return out


class Entries(Generic[T]):
    """Named entries (providers, models, teams): a broken entry stays as None, so its name
    still counts as defined and a reference to it adds no second, misleading problem."""

    def __init__(self, item: Check[T], *, name: Str, required_one: str | None = None) -> None:
        self.item, self.name = item, name
        self.required_one = required_one  # "provider": at least one must be defined

    def __call__(
        self, value: object, path: str, problems: list[Problem]
    ) -> dict[str, T | None] | Invalid:
        if not isinstance(value, dict):
            return _fail(problems, path, f"expected a mapping, got {describe(value)}")
        if self.required_one and not value:
            return _fail(problems, path, f"must define at least one {self.required_one}")
        out: dict[str, T | None] = {}
        for key, item in value.items():
            name = self.name(key, join(path, key), problems)
            checked = _check(self.item, item, join(path, key), problems)
            if isinstance(name, Invalid) or isinstance(checked, Invalid):
                out[str(key)] = None
            else:
                out[name] = checked
        return out


def _check(check: Check[T], value: object, path: str, problems: list[Problem]) -> T | Invalid:
    # INVALID in the raw tree is an unresolved `${VAR}`, already reported by substitution.
    return INVALID if isinstance(value, Invalid) else check(value, path, problems)


def checks(check: Check[object]) -> dict[str, object]:
    """Field metadata naming the check a spec key's YAML value must pass."""
    return {"check": check}


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of every section; `problems` reports rules that span keys, relative to the spec."""

    def problems(self) -> Iterator[Problem]:
        return iter(())


S = TypeVar("S", bound=Spec)


class Record(Generic[S]):
    """A mapping with exactly the keys of spec class `cls`; null or absent keys take defaults.

    A bad value makes the whole record INVALID, unless `lenient`: then a bad key that has a
    default takes it, so one broken section doesn't stop the others' cross-reference checks.
    """

    def __init__(self, cls: type[S], *, lenient: bool = False) -> None:
        self.cls = cls
        self.lenient = lenient
        self.fields = {f.name: f for f in dataclasses.fields(cls)}

    def __call__(self, value: object, path: str, problems: list[Problem]) -> S | Invalid:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return _fail(problems, path, f"expected a mapping, got {describe(value)}")
        known = list(self.fields)
        for key in value:
            if key not in self.fields:
                hint = did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
                problems.append((join(path, key), f"unknown key {str(key)!r}{hint}"))
        # An unknown key spoils nothing else; a bad or missing value leaves nothing to build.
        values: dict[str, object] = {}
        complete = True
        for name, spec_field in self.fields.items():
            raw = value.get(name)
            required = spec_field.default is dataclasses.MISSING and (
                spec_field.default_factory is dataclasses.MISSING
            )
            if raw is None and required:
                problems.append((join(path, name), "required key is missing"))
                complete = False
            elif raw is not None:
                checked = _check(spec_field.metadata["check"], raw, join(path, name), problems)
                if not isinstance(checked, Invalid):
                    values[name] = checked
                elif not (self.lenient and not required):
                    complete = False
        if not complete:
            return INVALID
        result: S = self.cls(**values)
        rules = [(join(path, key), reason) for key, reason in result.problems()]
        problems.extend(rules)
        return INVALID if rules else result


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
KEY_PREFIX = "sk-sg-"
KEY_MIN_LEN = 20


@dataclass(frozen=True, kw_only=True)
class ServerSpec(Spec):
    host: str = field(default="127.0.0.1", metadata=checks(Str()))
    port: int = field(default=8080, metadata=checks(Int(min=1, max=65535)))
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata=checks(Int(min=1)))
    admin_key: str | None = field(default=None, repr=False, metadata=checks(_SECRET))
    key_cache_ttl_s: float = field(default=30.0, metadata=checks(Number(min=0)))
    access_log: bool = field(default=True, metadata=checks(Bool()))
    default_max_tokens: int = field(default=4096, metadata=checks(Int(min=1)))


@dataclass(frozen=True, kw_only=True)
class StoreSpec(Spec):
    url: str = field(
        default="memory://",
        metadata=checks(Url("memory", "redis", "rediss", "unix", "redis+sentinel", secret=True)),
    )


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
    deployments: list[DeploymentSpec | None] = field(
        metadata=checks(ListOf(Record(DeploymentSpec), required_one="deployment"))
    )


@dataclass(frozen=True, kw_only=True)
class PriceSpec(Spec):
    input_per_1m: float = field(metadata=checks(Number(min=0)))
    output_per_1m: float = field(metadata=checks(Number(min=0)))
    cached_input_per_1m: float | None = field(default=None, metadata=checks(Number(min=0)))
    reasoning_per_1m: float | None = field(default=None, metadata=checks(Number(min=0)))


@dataclass(frozen=True, kw_only=True)
class PricingSpec(Spec):
    overrides: dict[str, PriceSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(PriceSpec), name=Str()))
    )


@dataclass(frozen=True, kw_only=True)
class KeySpec(Spec):
    name: str = field(metadata=checks(Str()))
    key: str | None = field(default=None, repr=False, metadata=checks(Str(secret=True)))
    sha256: str | None = field(default=None, metadata=checks(_SHA256))
    project: str | None = field(default=None, metadata=checks(Str()))
    environment: str | None = field(default=None, metadata=checks(Str()))
    workload: str | None = field(default=None, metadata=checks(Str()))
    tags: dict[str, str] = field(
        default_factory=dict, metadata=checks(StrMap(Str(), Str(allow_empty=True)))
    )

    def problems(self) -> Iterator[Problem]:
        if (self.key is None) == (self.sha256 is None):
            yield "key", "give exactly one of key (the plain key) or sha256 (its digest)"
        elif self.key is not None and (
            not self.key.startswith(KEY_PREFIX) or len(self.key) < KEY_MIN_LEN
        ):
            yield "key", f"must start with {KEY_PREFIX!r} and be {KEY_MIN_LEN}+ characters long"


@dataclass(frozen=True, kw_only=True)
class TeamSpec(Spec):
    description: str | None = field(default=None, metadata=checks(Str(allow_empty=True)))
    keys: list[KeySpec | None] = field(
        default_factory=list, metadata=checks(ListOf(Record(KeySpec)))
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
    pricing: PricingSpec = field(default_factory=PricingSpec, metadata=checks(Record(PricingSpec)))
    teams: dict[str, TeamSpec | None] = field(
        default_factory=dict, metadata=checks(Entries(Record(TeamSpec), name=_TEAM_NAME))
    )


def validate(raw: object, problems: list[Problem]) -> RootSpec | None:
    """Check a whole parsed document; None when it is too broken to compile at all."""
    root = Record(RootSpec, lenient=True)(raw, "", problems)
    return None if isinstance(root, Invalid) else root
