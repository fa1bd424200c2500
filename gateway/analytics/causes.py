"""Possible causes of an anomaly, ranked by the dollars each explains.

Input: per series field ("<series>|<value>|<metric>", `gateway.rollupformat`), the actual and
expected sums over the anomaly's unusual buckets. Two kinds of cause come out, in this order:

- where the excess sits, when it sits there out of proportion: a key (or a key never seen
  before) or a route (requested model -> deployment: a switch to a dearer model, a tier rule
  sending traffic to the big model, a fallback to a dearer deployment) that carries a quarter
  of the excess or more and grew half again as fast as the rest of the team, or more (a surge
  that lifts every key alike singles none out), and any new key with a twentieth of it;
- how the excess arose: the team's cost split exactly (LMDI, Ang 2005) into more requests
  (`volume`), fewer cache hits (`cache`), more tokens per billed request (`size`),
  dearer tokens (`mix`), and more calls after a request's first per request (`escalation`:
  cascades).

Each group is ranked by dollars. A drop is explained by whether requests stopped (`volume`)
or kept coming and failed (`errors`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.analytics.money import usd_text
from gateway.rollupformat import (
    SERIES_KEY,
    SERIES_ROUTE,
    SERIES_TEAM,
    series_field,
    split_parts,
    split_series_field,
)

Totals = Mapping[str, tuple[float, float]]  # field -> (actual, expected)

_SINGLED_OUT = 0.25  # share of the excess a key or route must carry to be named
_OUT_OF_PROPORTION = 1.5  # ... growing this many times faster than the rest of the team
_WHOLE_TEAM = 0.05  # a key or route with all but this of the team's spend is the team
_MIN_SHARE = 0.05  # causes explaining less than this of the excess are left out
_EPSILON = 1e-6  # stands for a zero in the LMDI logarithms (Ang's small-value strategy)
MAX_CAUSES = 6


@dataclass(frozen=True, slots=True)
class Cause:
    kind: str  # key | route | volume | cache | size | mix | escalation | errors
    value: str  # the key id, or "<model> -> <deployment>"; "" for the others
    excess_nano: int  # what it explains (negative: spend missing, for a drop)
    share: float  # of the anomaly's excess, 0..1
    detail: str  # in words: "new key", "cache hit rate 42% -> 3%", ...

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "value": self.value,
            "excess_nano": self.excess_nano,
            "share": round(self.share, 4),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Cause:
        return cls(
            str(raw["kind"]),
            str(raw.get("value", "")),
            int(raw["excess_nano"]),  # type: ignore[call-overload]
            float(raw["share"]),  # type: ignore[arg-type]
            str(raw.get("detail", "")),
        )


def rank_causes(totals: Totals, new_keys: frozenset[str] = frozenset()) -> list[Cause]:
    """The causes of the excess of a spike (or a drift) over its totals."""
    actual, expected = _team(totals, "cost")
    excess = actual - expected
    if excess <= 0:
        return []
    where = _parts(totals, excess, new_keys)
    how = [c for c in _drivers(totals, excess) if c.excess_nano > 0]
    return _top(where, excess) + _top(how, excess)


def rank_drop_causes(totals: Totals) -> list[Cause]:
    """What went quiet in a drop, and whether requests stopped or failed."""
    actual, expected = _team(totals, "cost")
    missing = actual - expected
    if missing >= 0:
        return []
    requests, usual_requests = _team(totals, "requests")
    errors, usual_errors = _team(totals, "errors")
    if requests >= 0.5 * usual_requests and errors > usual_errors:
        how = Cause(
            "errors",
            "",
            round(missing),
            1.0,
            f"{_count(errors)} of {_count(requests)} requests failed "
            f"(usually {_count(usual_errors)})",
        )
    else:
        how = Cause(
            "volume",
            "",
            round(missing),
            1.0,
            f"requests {_count(usual_requests)} -> {_count(requests)}",
        )
    return [how]


def _parts(totals: Totals, excess: float, new_keys: frozenset[str]) -> list[Cause]:
    """Keys and routes that carry at least `_SINGLED_OUT` of the excess and grew out of
    proportion: by `_OUT_OF_PROPORTION` times what the rest of the team grew (a surge that
    lifts every key alike singles none out); and new keys. One that is the whole team says
    nothing."""
    team_actual, team_expected = _team(totals, "cost")
    causes = []
    for field_name, (actual, expected) in totals.items():
        series, value, metric = split_series_field(field_name)
        if metric != "cost" or series not in (SERIES_KEY, SERIES_ROUTE):
            continue
        delta = actual - expected
        new = series == SERIES_KEY and value in new_keys
        if delta < (_MIN_SHARE if new else _SINGLED_OUT) * excess:
            continue
        rest_expected = team_expected - expected
        if not new:
            if rest_expected <= _WHOLE_TEAM * team_expected:
                continue
            growth = actual / expected if expected > 0 else math.inf
            rest_growth = max(team_actual - actual, 0.0) / rest_expected
            if growth < _OUT_OF_PROPORTION * rest_growth:
                continue
        count, usual_count = totals.get(series_field(series, value, "requests"), (0.0, 0.0))
        requests = f"requests {_count(usual_count)} -> {_count(count)}"
        if series == SERIES_KEY:
            kind, shown = "key", value
            detail = (
                "new key, never seen before" if new else f"{requests}; {_dollars(actual, expected)}"
            )
        else:
            model, deployment = split_parts(value)[:2]
            kind, shown = "route", f"{model} -> {deployment}"
            detail = f"{requests}; {_dollars(actual, expected)}"
        causes.append(Cause(kind, shown, round(delta), min(delta / excess, 1.0), detail))
    return causes


def _drivers(totals: Totals, excess: float) -> list[Cause]:
    """LMDI-I of cost C = F + X over requests R: first calls F = R * (B/R) * (K/B) * (F/K)
    (billed share, tokens per billed request, cost per token) and later calls X = R * (X/R)."""
    r1, r0 = _team(totals, "requests")
    h1, h0 = _team(totals, "hits")
    k1, k0 = _team(totals, "tokens")
    c1, c0 = _team(totals, "cost")
    x1, x0 = _team(totals, "extra_cost")
    f1, f0 = max(c1 - x1, 0.0), max(c0 - x0, 0.0)
    b1, b0 = max(r1 - h1, 0.0), max(r0 - h0, 0.0)
    first, later = _log_mean(f1, f0), _log_mean(x1, x0)
    factors = (
        ("volume", first + later, (r1, r0), f"requests {_count(r0)} -> {_count(r1)}"),
        (
            "cache",
            first,
            (_ratio(b1, r1), _ratio(b0, r0)),
            f"cache hit rate {_pct(h0, r0)} -> {_pct(h1, r1)}",
        ),
        (
            "size",
            first,
            (_ratio(k1, b1), _ratio(k0, b0)),
            f"tokens per request {_count(_ratio(k0, b0))} -> {_count(_ratio(k1, b1))}",
        ),
        (
            "mix",
            first,
            (_ratio(f1, k1), _ratio(f0, k0)),
            f"USD per 1M tokens {_per_m(f0, k0)} -> {_per_m(f1, k1)}",
        ),
        (
            "escalation",
            later,
            (_ratio(x1, r1), _ratio(x0, r0)),
            f"calls after a request's first: {_usd(x0)} -> {_usd(x1)}",
        ),
    )
    return [
        Cause(kind, "", round(part), part / excess, detail)
        for kind, weight, (now, usual), detail in factors
        if (part := weight * math.log(max(now, _EPSILON) / max(usual, _EPSILON)))
    ]


def _top(causes: list[Cause], excess: float) -> list[Cause]:
    kept = [c for c in causes if abs(c.excess_nano) >= _MIN_SHARE * abs(excess)]
    kept.sort(key=lambda c: -abs(c.excess_nano))
    return [Cause(c.kind, c.value, c.excess_nano, min(c.share, 1.0), c.detail) for c in kept][
        :MAX_CAUSES
    ]


def _team(totals: Totals, metric: str) -> tuple[float, float]:
    return totals.get(series_field(SERIES_TEAM, "", metric), (0.0, 0.0))


def _log_mean(a: float, b: float) -> float:
    a, b = max(a, _EPSILON), max(b, _EPSILON)
    return a if math.isclose(a, b) else (a - b) / (math.log(a) - math.log(b))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "n/a"


def _usd(nano: float) -> str:
    return usd_text(nano)


def _per_m(cost: float, tokens: float) -> str:
    return f"{cost / tokens / 1000:,.2f}" if tokens > 0 else "n/a"


def _dollars(actual: float, expected: float) -> str:
    return f"{_usd(actual)} vs {_usd(expected)} expected"
