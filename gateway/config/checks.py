"""Value checks for the config schema: each validates one YAML value at a key path and records
every problem as (key path, reason), naming a bad value without echoing secrets.

`Record` turns a mapping into a `Spec` dataclass whose fields name their checks; `schema` uses
these to describe gateway.yaml, and the admin API its request bodies. Each check also states
itself as JSON Schema (`json_schema()`), so the admin API's OpenAPI document is generated from
the very checks its handlers run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Generic, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from gateway.errors import InvalidRequest, redact
from gateway.types import usd_to_nano

Problem = tuple[str, str]  # (key path, reason)
JsonSchema = dict[str, Any]

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


class Unset(Substituted):
    """A value whose `${VAR}` is not set, under `check-config --allow-missing-env`: a check
    with a `stand_in` takes a valid value of its kind instead, so the rest of the file (types,
    cross-references) is still checked."""


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

    def json_schema(self) -> JsonSchema:
        """What the check accepts, as JSON Schema (2020-12): never narrower than the check, and
        as narrow as JSON Schema can say (rules spanning keys are in `Spec.problems` only)."""
        ...


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
        max_len: int | None = None,
        example: str | None = None,
    ) -> None:
        self.allow_empty = allow_empty
        self.pattern = re.compile(pattern) if pattern else None
        self.rule = rule  # says what `pattern` means, for the problem
        self.secret = secret
        self.max_len = max_len
        self.example = example  # a valid value, where the field's rules are stricter than Str's

    def __call__(self, value: object, path: str, problems: list[Problem]) -> str | Invalid:
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, int | float | datetime.date) and not self.secret:
                hint = " (quote it in YAML to make it text)"
            return _fail(problems, path, f"expected a string, got {describe(value)}{hint}")
        if not value and not self.allow_empty:
            return _fail(problems, path, "must not be empty")
        if self.max_len is not None and len(value) > self.max_len:
            return _fail(problems, path, f"must be at most {self.max_len} characters long")
        if self.pattern and value and not self.pattern.fullmatch(value):
            got = describe(value, secret=self.secret)
            return _fail(problems, path, f"{self.rule}, got {got}")
        return str(value)  # a plain str: the runtime config never carries `Substituted`

    def stand_in(self) -> str | None:
        return self.example  # None: the unset value's own text is checked

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {"type": "string"}
        if not self.allow_empty:
            schema["minLength"] = 1
        if self.max_len is not None:
            schema["maxLength"] = self.max_len
        if self.pattern:
            schema["pattern"] = f"^(?:{self.pattern.pattern})$"
        return schema


class OneOf:
    def __init__(self, *choices: str, false: str | None = None) -> None:
        self.choices = list(choices)
        # YAML reads an unquoted `off` (or `no`) as false: the choice it then stands for.
        self.false = false

    def __call__(self, value: object, path: str, problems: list[Problem]) -> str | Invalid:
        if isinstance(value, str) and value in self.choices:
            return str(value)
        if value is False and self.false is not None:
            return self.false
        expected = ", ".join(repr(c) for c in self.choices)
        hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
        return _fail(problems, path, f"expected one of {expected}, got {describe(value)}{hint}")

    def stand_in(self) -> str:
        return self.choices[0]

    def json_schema(self) -> JsonSchema:
        if self.false is not None:
            return {"enum": [*self.choices, False]}
        return {"type": "string", "enum": list(self.choices)}


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

    def stand_in(self) -> int:
        return max(1, self.min or 0) if self.max is None else min(max(1, self.min or 0), self.max)

    def json_schema(self) -> JsonSchema:
        return _bounded({"type": "integer"}, self.min, self.max)


class Number:
    def __init__(
        self, *, min: float | None = None, max: float | None = None, positive: bool = False
    ) -> None:
        self.min, self.max, self.positive = min, max, positive

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
        return INVALID if _out_of_range(number, self.min, self.max, path, problems) else number

    def stand_in(self) -> float:
        low = max(1.0, self.min or 0.0)
        return low if self.max is None else min(low, self.max)

    def json_schema(self) -> JsonSchema:
        schema = _bounded({"type": "number"}, self.min, self.max)
        if self.positive:
            schema["exclusiveMinimum"] = 0
        return schema


def _bounded(schema: JsonSchema, low: float | None, high: float | None) -> JsonSchema:
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


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


class Usd:
    """A USD amount, written as a number or a decimal string, returned as exact nano-USD.

    A YAML float goes through its shortest repr (what was written), so 0.15 is exactly
    150_000_000 nano; an amount finer than a nano-dollar is refused rather than rounded.
    """

    MAX_USD: Final = 10**12  # keeps the nano-USD conversion exact, and catches runaway zeros
    # A decimal as Python's Decimal reads it, without a sign: "12", "12.50", ".5", "1e3".
    DECIMAL: Final = r"^\s*\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"

    def __init__(
        self, *, positive: bool = False, signed: bool = False, max_usd: Decimal | int = MAX_USD
    ) -> None:
        self.positive = positive
        self.signed = signed  # a negative amount too (a credit), up to -max_usd
        self.max_usd = Decimal(max_usd)

    def __call__(self, value: object, path: str, problems: list[Problem]) -> int | Invalid:
        amount = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            with contextlib.suppress(InvalidOperation):
                amount = Decimal(str(value).strip())
        if amount is None or not amount.is_finite():
            kind = "a USD amount (a number, or a decimal string like '12.50')"
            return _fail(problems, path, f"expected {kind}, got {describe(value)}")
        got = describe(value)
        if amount < 0 and not self.signed:
            return _fail(problems, path, f"must not be negative, got {got}")
        if self.positive and amount == 0:
            return _fail(problems, path, f"must be greater than 0, got {got}")
        if abs(amount) > self.max_usd:
            bound = "between -{0} and {0}" if self.signed else "at most {0}"
            return _fail(problems, path, f"must be {bound.format(self.max_usd)}, got {got}")
        _, digits, exponent = amount.as_tuple()
        below_nano = -9 - int(exponent)  # digits past the 9th decimal must all be zero
        if below_nano > 0 and any(digits[-below_nano:]):
            reason = "more than 9 decimals: amounts are kept in whole nano-USD"
            return _fail(problems, path, f"{reason}, got {got}")
        return usd_to_nano(str(amount))

    def stand_in(self) -> int:
        return usd_to_nano("1")

    def json_schema(self) -> JsonSchema:
        top = float(self.max_usd)
        low = "exclusiveMinimum" if self.positive else "minimum"
        number: JsonSchema = {"type": "number", low: -top if self.signed else 0, "maximum": top}
        pattern = self.DECIMAL.replace(r"\+?", "[+-]?") if self.signed else self.DECIMAL
        if self.signed:
            more = f"negative or positive, at most {self.max_usd} either way"
        else:
            more = f"{'greater than' if self.positive else 'at least'} 0 and at most {self.max_usd}"
        return {
            "anyOf": [number, {"type": "string", "pattern": pattern}],
            "description": f"USD, {more}, with at most 9 decimals "
            '(a decimal string such as "12.50" keeps it exact)',
        }


class Instant:
    """A moment, as an ISO 8601 time (UTC when it names no offset) or epoch seconds; returned as
    epoch milliseconds."""

    def __call__(self, value: object, path: str, problems: list[Problem]) -> int | Invalid:
        if isinstance(value, str):
            try:
                when = datetime.datetime.fromisoformat(value)
            except ValueError:
                return _fail(problems, path, f"expected an ISO 8601 time, got {describe(value)}")
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            return int(when.timestamp() * 1000)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return int(value * 1000)
        reason = "expected an ISO 8601 time or epoch seconds"
        return _fail(problems, path, f"{reason}, got {describe(value)}")

    def json_schema(self) -> JsonSchema:
        return {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO 8601 (UTC when no offset is given) or epoch seconds",
        }


class Increasing:
    """A list of integers in strictly increasing order (budget alert thresholds)."""

    def __init__(self, item: Int) -> None:
        self.items = ListOf(item)

    def __call__(
        self, value: object, path: str, problems: list[Problem]
    ) -> tuple[int, ...] | Invalid:
        items = self.items(value, path, problems)
        if isinstance(items, Invalid):
            return INVALID
        numbers = [item for item in items if item is not None]
        if len(numbers) < len(items):
            return INVALID  # an item's own problem is recorded
        for i in range(1, len(numbers)):
            if numbers[i] <= numbers[i - 1]:
                reason = f"must be greater than the value before it ({numbers[i - 1]})"
                return _fail(problems, f"{path}[{i}]", f"{reason}, got {numbers[i]}")
        return tuple(numbers)

    def json_schema(self) -> JsonSchema:
        schema = self.items.json_schema()
        schema["uniqueItems"] = True
        schema["description"] = "in strictly increasing order"
        return schema


class Distinct(Generic[T]):
    """A non-empty list of distinct values, as a tuple. With `single`, one value alone stands
    for a one-item list (`hint: premium` is `hint: [premium]`)."""

    def __init__(self, item: Check[T], *, what: str, single: bool = False) -> None:
        self.item = item
        self.items = ListOf(item, required_one=what)
        self.single = single

    def __call__(
        self, value: object, path: str, problems: list[Problem]
    ) -> tuple[T, ...] | Invalid:
        if self.single and not isinstance(value, list):
            one = self.item(value, path, problems)
            return INVALID if isinstance(one, Invalid) else (one,)
        items = self.items(value, path, problems)
        if isinstance(items, Invalid):
            return INVALID
        chosen = [item for item in items if item is not None]
        if len(chosen) < len(items):
            return INVALID  # an item's own problem is recorded
        for i, item in enumerate(chosen):
            if item in chosen[:i]:
                return _fail(problems, f"{path}[{i}]", f"{item!r} is listed twice")
        return tuple(chosen)

    def json_schema(self) -> JsonSchema:
        many = self.items.json_schema()
        many["uniqueItems"] = True
        return {"anyOf": [self.item.json_schema(), many]} if self.single else many


class SubsetOf(Distinct[str]):
    """A non-empty list of distinct choices (webhook event kinds, cascade checks), as a tuple."""

    def __init__(self, *choices: str, what: str) -> None:
        super().__init__(OneOf(*choices), what=what)


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

    def stand_in(self) -> bool:
        return False

    def json_schema(self) -> JsonSchema:
        return {"type": "boolean"}


class Url:
    """An absolute URL with one of `schemes`; http(s) URLs lose their trailing slash."""

    def __init__(
        self,
        *schemes: str,
        secret: bool = False,
        problem: Callable[[str], str | None] | None = None,
    ) -> None:
        self.schemes = schemes
        self.secret = secret  # store URLs may carry a password
        self.problem = problem  # what is wrong with the rest of the URL (without the secret)

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
        if self.problem is not None and (reason := self.problem(value)) is not None:
            return _fail(problems, path, reason)
        return str(value).rstrip("/") if parts.scheme in ("http", "https") else str(value)

    def stand_in(self) -> str:
        # A server's URL (`memory://` or `local://` would stand for none at all, and change
        # what is checked).
        scheme = next((s for s in self.schemes if s not in ("memory", "local")), self.schemes[0])
        return f"{scheme}://unset.invalid"

    def json_schema(self) -> JsonSchema:
        schemes = "|".join(re.escape(s) for s in self.schemes)
        return {"type": "string", "format": "uri", "pattern": f"^(?:{schemes})://"}


class StrMap(Generic[T]):
    """A mapping of non-empty string keys to checked values (headers, tags, weights)."""

    def __init__(self, key: Str, value: Check[T], *, max_items: int | None = None) -> None:
        self.key, self.value = key, value
        self.max_items = max_items

    def __call__(self, value: object, path: str, problems: list[Problem]) -> dict[str, T] | Invalid:
        if not isinstance(value, dict):
            return _fail(problems, path, f"expected a mapping, got {describe(value)}")
        if self.max_items is not None and len(value) > self.max_items:
            return _fail(problems, path, f"must have at most {self.max_items} entries")
        out: dict[str, T] = {}
        before = len(problems)
        for key, item in value.items():
            name = self.key(key, join(path, key), problems)
            checked = self.value(item, join(path, key), problems)
            if not isinstance(name, Invalid) and not isinstance(checked, Invalid):
                out[name] = checked
        return out if len(problems) == before else INVALID

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {
            "type": "object",
            "propertyNames": self.key.json_schema(),
            "additionalProperties": self.value.json_schema(),
        }
        if self.max_items is not None:
            schema["maxProperties"] = self.max_items
        return schema


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

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {"type": "array", "items": self.item.json_schema()}
        if self.required_one:
            schema["minItems"] = 1
        return schema


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

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {
            "type": "object",
            "propertyNames": self.name.json_schema(),
            "additionalProperties": self.item.json_schema(),
        }
        if self.required_one:
            schema["minProperties"] = 1
        return schema


def _check(check: Check[T], value: object, path: str, problems: list[Problem]) -> T | Invalid:
    # INVALID in the raw tree is an unresolved `${VAR}`, already reported by substitution.
    if isinstance(value, Invalid):
        return INVALID
    if isinstance(value, Unset):
        stand_in = getattr(check, "stand_in", None)
        valid = None if stand_in is None else stand_in()
        if valid is not None:
            return cast(T, valid)
    return check(value, path, problems)


def checks(check: Check[object], *, doc: str = "") -> dict[str, object]:
    """Field metadata naming the check a spec key's YAML value must pass; `doc` describes the
    key where a generated document (the admin API's OpenAPI) shows it."""
    return {"check": check, "doc": doc}


def _nullable(schema: JsonSchema) -> JsonSchema:
    """`schema` or null: a null value of a key with a default means "take the default"."""
    nullable = dict(schema)
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    if isinstance(schema.get("type"), str):
        nullable["type"] = [schema["type"], "null"]
    elif "enum" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return nullable


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
            required = _required(spec_field)
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

    def json_schema(self) -> JsonSchema:
        properties: dict[str, JsonSchema] = {}
        required: list[str] = []
        for name, spec_field in self.fields.items():
            schema = spec_field.metadata["check"].json_schema()
            if spec_field.metadata.get("doc"):
                schema = {**schema, "description": spec_field.metadata["doc"]}
            if _required(spec_field):
                required.append(name)
            else:
                schema = _nullable(schema)
                if isinstance(spec_field.default, str | int | float | tuple):
                    default = spec_field.default
                    schema["default"] = list(default) if isinstance(default, tuple) else default
            properties[name] = schema
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        if self.cls.__doc__:
            schema["description"] = " ".join(self.cls.__doc__.split())
        return schema


def checked(spec: type[S], raw: Mapping[str, object]) -> S:
    """A request body (admin API, CLI) checked against `spec` as the config's sections are;
    InvalidRequest naming every problem if it fails."""
    problems: list[Problem] = []
    result = Record(spec)(dict(raw), "", problems)
    if problems or isinstance(result, Invalid):
        raise InvalidRequest.from_problems(problems)
    return result


def _required(spec_field: dataclasses.Field[object]) -> bool:
    return spec_field.default is dataclasses.MISSING and (
        spec_field.default_factory is dataclasses.MISSING
    )
