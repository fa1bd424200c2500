"""The mock upstream's plain data: its knobs, a recorded request, and an error injection.

Nothing here does I/O; `state.py` owns the live lists and `gate.py` applies injections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)

InjectionMode = Literal["timeout", "disconnect"]
_MODES = ("timeout", "disconnect")


@dataclass
class MockOptions:
    """How the mock answers. Read on every request, so a test may change it while serving
    (all but `record_limit`, which sizes the recording once)."""

    latency_s: float = 0.0  # before answering, or before the first stream chunk
    chunk_delay_s: float = 0.0  # between stream chunks
    completion_tokens: int = 16  # reply words per choice, unless the request bounds it lower
    report_usage: bool = True  # False: no `usage` anywhere, like an upstream that omits it
    record_limit: int = 10000  # recorded requests kept; the oldest are dropped
    models: tuple[str, ...] = DEFAULT_MODELS  # what GET /v1/models lists


@dataclass(slots=True)
class RecordedRequest:
    """One request as it reached the mock: header names lowercased, `time` is monotonic."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    time: float

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if self.body else None
        return model if isinstance(model, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "time": self.time,
        }


@dataclass
class Injection:
    """A failure the mock plays instead of (or before) a normal answer.

    `status` answers with that HTTP status and an error body; `mode="timeout"` sleeps `delay_s`
    first (then answers normally, or with `status` if set); `mode="disconnect"` drops the
    connection: at once for plain requests, after `after_chunks` SSE events for streams.
    `model` / `path` narrow which requests match (`path` matches the request path exactly or as
    its suffix, so "/chat/completions" matches "/v1/chat/completions"); `times` is how many
    requests it applies to before expiring (None: until cleared). A 429 carries `retry-after`.
    """

    status: int | None = None
    mode: InjectionMode | None = None
    delay_s: float = 3600.0
    after_chunks: int = 0
    model: str | None = None
    path: str | None = None
    times: int | None = None
    message: str | None = None
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.status is None and self.mode is None:
            raise ValueError("an injection needs a status or a mode")
        if self.mode is not None and self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {self.mode!r}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), not {self.status}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for unlimited)")
        if self.delay_s < 0 or self.after_chunks < 0 or self.retry_after_s < 0:
            raise ValueError("delay_s, after_chunks and retry_after_s must not be negative")

    def matches(self, path: str, model: object) -> bool:
        if self.model is not None and self.model != model:
            return False
        return self.path is None or path == self.path or path.endswith(self.path)

    @classmethod
    def from_json(cls, data: object) -> Injection:
        """Build from the JSON the control endpoint receives; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError("an injection must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown injection keys: {', '.join(unknown)}")
        for key, value in data.items():
            _check_type(key, value, str(known[key].type))
        return cls(**cast(dict[str, Any], data))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_type(key: str, value: object, annotation: str) -> None:
    # Annotations are strings under `from __future__ import annotations`; the field types here are
    # few and simple, so matching on their text beats pulling in a validation library.
    if value is None and "None" in annotation:
        return
    if annotation.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"injection key {key!r} has the wrong type: {value!r}")
