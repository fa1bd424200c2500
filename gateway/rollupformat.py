"""The rollup format: what the aggregator writes and reports read, shared by both sides.

A rollup is a Redis hash per (team, granularity, bucket, dimension) whose fields are
"<value>|<metric>" and whose values are integer sums. Hourly buckets are YYYYMMDDHH (UTC), daily
buckets YYYYMMDD. Metric names never contain "|", so a field splits at its last "|"
(`split_field`); a value that combines several names (project_model, line) joins its parts with
"|" after escaping "%" and "|" in each part (`join_parts` / `split_parts`). Key names are
`rediskeys.rollup`'s.
"""

from __future__ import annotations

import time

MISSING = "-"  # the value of a dimension the event does not name (no project, ...)

HOURLY = "h"
DAILY = "d"

# Single-name dimensions, then the combined ones. "line" is one row of the FOCUS export (daily
# only): who (project / environment / workload), what (provider / deployment / served and
# requested model), and the kind of charge, with the description of a posted external cost.
SINGLE_DIMENSIONS = (
    "team",
    "project",
    "environment",
    "workload",
    "model",
    "served_model",
    "deployment",
    "provider",
    "key",
    "tag",
)
DIMENSIONS = (*SINGLE_DIMENSIONS, "project_model", "line")
HOURLY_DIMENSIONS = tuple(d for d in DIMENSIONS if d != "line")
LINE_PARTS = (
    "project",
    "environment",
    "workload",
    "provider",
    "deployment",
    "served_model",
    "requested_model",
    "kind",
    "description",
)

METRICS = (
    "cost",
    "list_cost",
    "savings",
    "prompt",
    "cached_prompt",
    "completion",
    "reasoning",
    "requests",
    "errors",
    "cache_hits",
    "revenue",
    "revenue_requests",  # requests that carried their own revenue (the rest use the team's rate)
    "external",
    "external_count",
)
SAVINGS_PREFIX = "savings:"  # "savings:<optimization>", one per optimization named by events


def hour_bucket(ts_ms: int) -> str:
    """The hourly bucket (YYYYMMDDHH, UTC) of an epoch-ms time; its first 8 characters are the
    daily bucket."""
    t = time.gmtime(ts_ms // 1000)
    return f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}{t.tm_hour:02d}"


def split_field(hash_field: str) -> tuple[str, str]:
    """("<value>", "<metric>") of a rollup hash field."""
    value, _, metric = hash_field.rpartition("|")
    return value, metric


def join_parts(*parts: str) -> str:
    return "|".join(p.replace("%", "%25").replace("|", "%7C") for p in parts)


def split_parts(value: str) -> tuple[str, ...]:
    return tuple(p.replace("%7C", "|").replace("%25", "%") for p in value.split("|"))
