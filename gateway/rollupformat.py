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
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

MISSING = "-"  # the value of a dimension the event does not name (no project, ...)

HOURLY = "h"
DAILY = "d"

# Single-name dimensions, then the combined ones. "line" is one charge line of the FOCUS export
# (daily only, see LINE_PARTS).
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
# A line: the kind of charge, whom it is allocated to (project / environment / workload and the
# user's tags), what was consumed (provider, deployment, served and requested model) at which
# prices, and for a posted external cost its classification, amount and description. An event
# that cost nothing and consumed nothing (a request refused before any upstream call) has none.
LINE_PARTS = (
    "kind",  # LINE_USAGE | LINE_CACHE | LINE_EXTERNAL
    "project",
    "environment",
    "workload",
    "tags",  # the user's tags as sorted JSON, at most MAX_LINE_TAGS of them
    "provider",
    "deployment",
    "served_model",
    "requested_model",
    # Usage: USD per 1M tokens, "input,cached input,output,reasoning" (`price_text`), of the
    # served model's deployment when the event was rolled up; MISSING when unknown, contracted
    # "=" when it is the list price.
    "list_prices",
    "contracted_prices",
    "charge",  # external: its FOCUS classification, the JSON of `analytics.taxonomy.ChargeClass`
    "amount",  # external: its amount, nano-USD
    "description",  # external: what it was
)
LINE_USAGE = "usage"  # tokens of an upstream call
LINE_CACHE = "cache"  # an answer from the response cache
LINE_EXTERNAL = "external"  # a cost posted through the admin API
# Tags kept on a line (the first by key). Every source bounds them already (x-sg-tags 16,
# the keys API 50); this bounds what a hand-written YAML key could put in a rollup field.
MAX_LINE_TAGS = 64

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
# What a FOCUS line needs of them: its rows' costs and quantities. Counts of requests, errors
# and revenue stay in the other dimensions (showback), which keeps the busiest rollup smaller.
LINE_METRICS = frozenset(METRICS) - {
    "requests",
    "errors",
    "revenue",
    "revenue_requests",
    "external",
}
SAVINGS_PREFIX = "savings:"  # "savings:<optimization>", one per optimization named by events


# Signals for the recommendations (`analytics.recommendations`): daily rollups of their own,
# kept `rediskeys.ROLLUP_SIGNAL_TTL_S`, from requests that succeeded and whose event carries
# the gateway's signals (`SpendEvent.fingerprint`, hashes and a shape only). SIGNAL_ROUTE's
# value is the requested model, SIGNAL_FINGERPRINT's and SIGNAL_PREFIX's `join_parts(model,
# hash)` with the one metric SIGNAL_COUNT, for the sampled hashes only (`signal_sampled`).
SIGNAL_ROUTE = "signals"
SIGNAL_FINGERPRINT = "fingerprint"
SIGNAL_PREFIX = "prefix"
SIGNAL_DIMENSIONS = (SIGNAL_ROUTE, SIGNAL_FINGERPRINT, SIGNAL_PREFIX)
SIGNAL_COUNT = "n"
SIGNAL_ROUTE_METRICS = (
    "requests",  # first calls of requests
    "hits",  # of those, answered from the response cache
    "miss_cost",  # what the requests not answered from the cache cost (every call)
    # Short simple requests (no tools, no JSON mode, at most SHORT_PROMPT_TOKENS in and
    # SHORT_COMPLETION_TOKENS out, not cache hits): how many, their tokens and their cost.
    "short",
    "short_prompt",
    "short_cached",
    "short_completion",
    "short_reasoning",
    "short_cost",
    "long",  # requests with a long prompt (a prefix fingerprint), not cache hits
    "long_cached",  # their cached prompt tokens (the provider's prompt cache at work)
)
SHORT_PROMPT_TOKENS = 1000
SHORT_COMPLETION_TOKENS = 500
# One hash in SIGNAL_SAMPLE is counted in SIGNAL_FINGERPRINT / SIGNAL_PREFIX (those whose first
# hex digit is 0): every copy of a request shares its hash, so the sample's duplicate share is
# the traffic's, at 1/16 of the memory (one field per distinct sampled request and day).
SIGNAL_SAMPLE = 16


def signal_sampled(digest: str) -> bool:
    return digest[:1] == "0"


# Fine buckets for anomaly detection (`anomalies.bucket_s` seconds): one hash per team and
# bucket (`rediskeys.anomaly_series`), fields "<series>|<value>|<metric>". Requests only (kind
# "request"): a posted external cost is not traffic, an imported FOCUS row a day's total. The
# team as a whole (value ""), counts each request once: "extra" is what the calls after a
# request's first (cascade escalations) cost.
SERIES_TEAM = "t"
SERIES_KEY = "k"  # per key id
SERIES_MODEL = "m"  # per requested model
# Per requested model and the deployment that served it (`join_parts`): first calls only.
SERIES_ROUTE = "r"
SERIES_TEAM_METRICS = (
    "cost",
    "requests",  # requests (a request's later calls are not counted again)
    "hits",  # requests answered from the response cache
    "tokens",  # prompt + completion tokens of the requests' first calls, cache hits excluded
    "extra_cost",  # cost of the calls after a request's first (cascade escalations)
    "errors",  # requests that failed (status >= 400 or outcome not ok)
)
SERIES_PART_METRICS = ("cost", "requests")


def series_field(series: str, value: str, metric: str) -> str:
    return f"{series}|{value}|{metric}"


def split_series_field(hash_field: str) -> tuple[str, str, str]:
    """(series, value, metric) of a fine-bucket field; the value may itself hold "|"."""
    series, _, rest = hash_field.partition("|")
    value, _, metric = rest.rpartition("|")
    return series, value, metric


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


def price_text(nano_per_m: Iterable[int]) -> str:
    """A line's prices (nano-USD per 1M tokens: input, cached input, output, reasoning) as USD
    per 1M tokens, exact and short: "2.5,1.25,10,10"."""
    return ",".join(format(Decimal(n).scaleb(-9).normalize(), "f") for n in nano_per_m)


def parse_prices(text: str, listed: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
    """`price_text` back to nano-USD per 1M tokens; "=" is `listed`; None when unknown."""
    if text == "=":
        return listed
    try:
        prices = tuple(int(Decimal(p).scaleb(9)) for p in text.split(","))
    except (InvalidOperation, ValueError):
        return None
    return prices if len(prices) == 4 else None
