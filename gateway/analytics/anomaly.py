"""What an anomaly is, as stored and shown: its kind, scope, lifecycle, numbers and causes;
the detector's state between buckets; a person's feedback. Pure data and its JSON forms; the
detection itself is `gateway.analytics.detector`, the storage `gateway.anomalies.records`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.analytics.causes import Cause
from gateway.types import nano_to_usd_str

Kind = Literal["spike", "drop", "drift"]
KINDS: tuple[Kind, ...] = ("spike", "drop", "drift")
Status = Literal["open", "escalated", "resolved"]
STATUSES: tuple[Status, ...] = ("open", "escalated", "resolved")
Verdict = Literal["expected", "real"]
VERDICTS: tuple[Verdict, ...] = ("expected", "real")
TEAM_SCOPE = "team"


@dataclass(frozen=True, slots=True)
class Feedback:
    verdict: Verdict
    note: str
    at_s: float

    def to_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "note": self.note, "at_s": self.at_s}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Feedback:
        return cls(raw["verdict"], str(raw.get("note", "")), float(raw["at_s"]))


@dataclass(slots=True)
class Anomaly:
    id: str
    team: str
    kind: Kind
    scope: str  # "team", "key:<key id>" or "model:<requested model>": the series that tripped
    status: Status
    severity: str
    start_s: int  # the first unusual bucket's start
    end_s: int  # the last unusual bucket's end (drift: the window's end)
    bucket_s: int
    detected_s: float  # when it was opened
    updated_s: float
    buckets: int = 0  # unusual buckets so far (drift: daily checks that found it)
    actual_nano: int = 0  # over the unusual buckets (drift: the last day)
    expected_nano: int = 0
    band_low_nano: int = 0  # the baseline's band over the same buckets
    band_high_nano: int = 0
    z: float = 0.0  # the deviation of the whole anomaly so far, in robust standard deviations
    variance: float = 0.0  # sum of the buckets' squared scales, for `z`
    quiet: int = 0  # consecutive buckets (drift: checks) back within the band
    sustained: bool = False  # opened by the CUSUM of a moderate shift, not by a bucket far out
    resolved_s: float | None = None
    suppressed_by: str | None = None  # an anomaly marked `expected` with the same pattern
    causes: list[Cause] = field(default_factory=list)
    # field -> [actual, expected] over the unusual buckets: what the causes are computed from.
    totals: dict[str, list[float]] = field(default_factory=dict)

    @property
    def excess_nano(self) -> int:
        return self.actual_nano - self.expected_nano

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def pattern(self) -> tuple[str, str, str, str] | None:
        """What `expected` feedback suppresses: the same team, kind and leading cause."""
        if not self.causes:
            return None
        top = self.causes[0]
        return (self.team, self.kind, top.kind, top.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "team": self.team,
            "kind": self.kind,
            "scope": self.scope,
            "status": self.status,
            "severity": self.severity,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "bucket_s": self.bucket_s,
            "detected_s": self.detected_s,
            "updated_s": self.updated_s,
            "buckets": self.buckets,
            "actual_nano": self.actual_nano,
            "expected_nano": self.expected_nano,
            "band_low_nano": self.band_low_nano,
            "band_high_nano": self.band_high_nano,
            "z": self.z,
            "variance": self.variance,
            "quiet": self.quiet,
            "sustained": self.sustained,
            "resolved_s": self.resolved_s,
            "suppressed_by": self.suppressed_by,
            "causes": [c.to_dict() for c in self.causes],
            "totals": self.totals,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Anomaly:
        values = dict(raw)
        values["causes"] = [Cause.from_dict(c) for c in raw.get("causes", ())]
        values["totals"] = {k: list(v) for k, v in raw.get("totals", {}).items()}
        return cls(**values)


def public_view(anomaly: Anomaly, feedback: Feedback | None) -> dict[str, Any]:
    """The anomaly as the admin API, the report and the alerts show it: USD as exact decimal
    strings, times in ISO 8601 UTC, causes in rank order."""
    excess = anomaly.excess_nano
    return {
        "id": anomaly.id,
        "team": anomaly.team,
        "kind": anomaly.kind,
        "scope": anomaly.scope,
        "status": anomaly.status,
        "severity": anomaly.severity,
        "start": iso(anomaly.start_s),
        "end": iso(anomaly.end_s),
        "detected_at": iso(anomaly.detected_s),
        "resolved_at": iso(anomaly.resolved_s) if anomaly.resolved_s is not None else None,
        "bucket_s": anomaly.bucket_s,
        "buckets": anomaly.buckets,
        "actual_usd": nano_to_usd_str(anomaly.actual_nano),
        "expected_usd": nano_to_usd_str(anomaly.expected_nano),
        "band_usd": [
            nano_to_usd_str(anomaly.band_low_nano),
            nano_to_usd_str(anomaly.band_high_nano),
        ],
        "excess_usd": nano_to_usd_str(excess),
        "z": round(anomaly.z, 2),
        "causes": [
            {
                "kind": c.kind,
                "value": c.value,
                "excess_usd": nano_to_usd_str(c.excess_nano),
                "share": round(c.share, 4),
                "detail": c.detail,
            }
            for c in anomaly.causes
        ],
        "suppressed_by": anomaly.suppressed_by,
        "feedback": None
        if feedback is None
        else {"verdict": feedback.verdict, "note": feedback.note, "at": iso(feedback.at_s)},
    }


def iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def anomaly_id(team: str, kind: str, start_s: int) -> str:
    """Readable, and the same for the same anomaly: a replica that re-runs a bucket after a
    crash writes the same record instead of a second one."""
    return f"{team}-{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start_s))}"


@dataclass(slots=True)
class Run:
    """Unusual buckets of one series, not (yet) an anomaly. A spike's run lasts while the
    CUSUM of its buckets' deviations stays above zero; its last `streak` buckets, from
    `streak_start`, were out of the band. A drop's run is its buckets without spend."""

    start: int  # first bucket
    count: int = 0
    excess: float = 0.0
    variance: float = 0.0
    expected_requests: float = 0.0
    cusum: float = 0.0
    streak_start: int = 0
    streak: int = 0
    streak_excess: float = 0.0
    expected: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, float]) -> Run:
        return cls(**raw)  # type: ignore[arg-type]


@dataclass(slots=True)
class TeamState:
    """The detector's memory of one team between buckets, kept in the store so that any
    replica can carry on: runs not yet anomalies, the anomalies open, and the buckets of past
    spikes and drops, which baselines leave out."""

    runs: dict[str, Run] = field(default_factory=dict)  # scope -> its run of unusual buckets
    drop: Run | None = None  # buckets without spend
    open: dict[str, str] = field(default_factory=dict)  # kind -> id of the open anomaly
    excluded: list[tuple[int, int]] = field(default_factory=list)  # bucket ranges, inclusive

    def excluded_buckets(self) -> set[int]:
        return {n for first, last in self.excluded for n in range(first, last + 1)}

    def exclude(self, first: int, last: int) -> None:
        """Leave buckets first..last out of the baselines (merging with the last range)."""
        if self.excluded and self.excluded[-1][0] <= first <= self.excluded[-1][1] + 1:
            self.excluded[-1] = (self.excluded[-1][0], max(last, self.excluded[-1][1]))
        else:
            self.excluded.append((first, last))

    def forget_before(self, n: int) -> None:
        self.excluded = [(a, b) for a, b in self.excluded if b >= n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": {scope: run.to_dict() for scope, run in self.runs.items()},
            "drop": self.drop.to_dict() if self.drop else None,
            "open": self.open,
            "excluded": [list(r) for r in self.excluded],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TeamState:
        drop = raw.get("drop")
        return cls(
            runs={scope: Run.from_dict(r) for scope, r in raw.get("runs", {}).items()},
            drop=Run.from_dict(drop) if drop else None,
            open=dict(raw.get("open", {})),
            excluded=[(int(a), int(b)) for a, b in raw.get("excluded", ())],
        )
