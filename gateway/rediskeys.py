"""Every Redis key and stream name spendgate uses, in one place.

Keys carry a hash tag (`{...}`) so that every multi-key operation touches one Redis Cluster slot.
The embedded store (`memory://`, fakeredis) uses exactly the same layout.
"""

from __future__ import annotations

PREFIX = "sg"

# Virtual keys: one hash per key, plus an index of all key hashes, under one hash tag so that
# create/revoke update both atomically (MULTI) even on a cluster.
_KEYS_TAG = "{keys}"


def key_record(key_hash: str) -> str:
    """Hash: team, project, environment, workload, tags (JSON), name, created_at, revoked."""
    return f"{PREFIX}:{_KEYS_TAG}:rec:{key_hash}"


def key_index() -> str:
    """Set of the sha256 digests of every key ever created (revoked ones included)."""
    return f"{PREFIX}:{_KEYS_TAG}:index"


# Budgets, reservations, the spend stream and its rollups all live in the team's slot
# (`{t:<team>}`): one Lua call reserves against every budget of a request, settles them and
# appends the event; the aggregator applies a batch's rollups and XACKs in one script.
def team_tag(team: str) -> str:
    return "{t:" + team + "}"


def budget_counter(team: str, budget: str, period_id: str) -> str:
    """Hash: spent_nano, spent_tokens, reserved_nano, reserved_tokens. `period_id` is e.g.
    "d20261126", "w2026W48", "m202611" or "total": a new period is simply a new key."""
    return f"{PREFIX}:{team_tag(team)}:b:{budget}:{period_id}"


def reservation(team: str, request_id: str) -> str:
    """Hash: what one in-flight request reserved, per budget counter."""
    return f"{PREFIX}:{team_tag(team)}:res:{request_id}"


def reservation_deadlines(team: str) -> str:
    """Sorted set: request id -> deadline (epoch ms) of every open reservation of the team."""
    return f"{PREFIX}:{team_tag(team)}:resdl"


def settled_events(team: str, hour: str) -> str:
    """Set of event ids settled in that UTC hour (YYYYMMDDHH); makes settle idempotent."""
    return f"{PREFIX}:{team_tag(team)}:settled:{hour}"


SETTLED_TTL_S = 72 * 3600  # longer than any spool outage we replay


def budget_refusals(team: str, month: str) -> str:
    """Hash: "<budget>|block" / "<budget>|downgrade" -> requests that budget refused or sent to
    a cheaper model in the UTC month (YYYYMM), for the scorecard. Kept as long as the daily
    rollups (`ROLLUP_DAILY_TTL_S`)."""
    return f"{PREFIX}:{team_tag(team)}:refused:{month}"


def alerted_thresholds(team: str, budget: str, period_id: str) -> str:
    """Set of threshold percents already alerted for this budget period."""
    return f"{PREFIX}:{team_tag(team)}:alerted:{budget}:{period_id}"


def events_stream(team: str) -> str:
    """The team's spend stream (XADD by the settle script, read by the aggregator group)."""
    return f"{PREFIX}:{team_tag(team)}:events"


EVENTS_GROUP = "aggregators"


def streams_registry() -> str:
    """Set of team names that have a spend stream, so the aggregator finds them all."""
    return f"{PREFIX}:streams"


def rollup(team: str, granularity: str, bucket: str, dimension: str) -> str:
    """Hash of one rollup: field "<value>|<metric>" -> integer. granularity "h" (bucket
    YYYYMMDDHH) or "d" (YYYYMMDD); dimension e.g. "team", "project", "model", "key", "tag"."""
    return f"{PREFIX}:{team_tag(team)}:r:{granularity}:{bucket}:{dimension}"


def anomaly_series(team: str, bucket_s: int, start_s: int) -> str:
    """Hash of one fine bucket of the team's spend, for anomaly detection: field
    "<series>|<value>|<metric>" -> integer (`rollupformat.series_field`). The bucket size is
    part of the name, so a new `anomalies.bucket_s` starts new series."""
    return f"{PREFIX}:{team_tag(team)}:as:{bucket_s}:{start_s}"


def archive_cursor(team: str) -> str:
    """String: the last stream id written to the cold-tier archive."""
    return f"{PREFIX}:{team_tag(team)}:archived"


def admin_budgets() -> str:
    """Hash: budget name -> JSON definition, for budgets created through the admin API."""
    return f"{PREFIX}:{{budgets}}:defs"


def forecast_lease() -> str:
    """String with a TTL of `forecasts.interval_s`: the aggregator replica forecasting budgets
    this interval (the others skip it)."""
    return f"{PREFIX}:{{alerts}}:forecasting"


def review_digests() -> str:
    """Hash: ISO week ("2026-W45") -> when its review digests were posted (epoch s). Written
    once per week by the aggregator replica that posted them; the maturity report reads the
    review cadence from it."""
    return f"{PREFIX}:{{alerts}}:reviews"


def review_lease() -> str:
    """String with a TTL: the aggregator replica posting this week's review digests."""
    return f"{PREFIX}:{{alerts}}:reviewing"


def alert_cooldown(kind: str, subject: str) -> str:
    """String with a TTL: set when an alert is sent, so it is not sent again within the cooldown."""
    return f"{PREFIX}:{{alerts}}:sent:{kind}:{subject}"


# Anomalies: a few records a week, so one slot holds them all and the detector updates them,
# with its own state, in one MULTI.
_ANOMALIES_TAG = "{anomalies}"


def anomaly_records() -> str:
    """Hash: anomaly id -> the anomaly as JSON (`gateway.analytics.anomaly.Anomaly`)."""
    return f"{PREFIX}:{_ANOMALIES_TAG}:records"


def anomaly_index() -> str:
    """Sorted set: anomaly id -> its start (epoch ms), for listing by time."""
    return f"{PREFIX}:{_ANOMALIES_TAG}:index"


def anomaly_feedback() -> str:
    """Hash: anomaly id -> the feedback a person gave on it (JSON: verdict, note, at). Apart
    from the record, so that a verdict never races the detector's update of the record."""
    return f"{PREFIX}:{_ANOMALIES_TAG}:feedback"


def anomaly_state() -> str:
    """Hash: team -> the detector's state of that team (JSON: runs of unusual buckets not yet
    an anomaly, open anomalies), plus field "_cursor": "<bucket_s>:<last bucket evaluated>"."""
    return f"{PREFIX}:{_ANOMALIES_TAG}:state"


def anomaly_lease() -> str:
    """String with a TTL: held by the aggregator replica that runs detection, so buckets are
    evaluated once, in order, by one replica at a time."""
    return f"{PREFIX}:{_ANOMALIES_TAG}:detector"


ANOMALY_RETENTION_S = 400 * 86400  # anomaly records are kept as long as daily rollups


# Response cache. Entries are spread over CACHE_SHARDS shards by the last character of `key` (what
# `cache.key.cache_key` returns: "<namespace>:<sha256 hex>", the namespace being "t:<team>" or
# "shared", so one team's entries can be found by SCAN). A shard is one hash tag: its entries,
# their index and their sizes are in one slot on a cluster (the put script touches all three),
# and the shards spread the cache over up to 16 slots.
CACHE_SHARDS = 16


def cache_shard(key: str) -> str:
    """The hash tag of `key`'s shard: "c" and the last hex digit of its hash."""
    return f"{{c{key[-1]}}}"


def cache_entry(key: str) -> str:
    """String: a zlib-compressed cached response (`cache.store`), SET with PX = its TTL, by
    the put script (`cache/lua/put.lua`)."""
    return f"{PREFIX}:cache:{cache_shard(key)}:{key}"


def cache_index(shard: str) -> str:
    """Sorted set: the shard's entry keys -> their expiry (ms): the order in which the put
    script lets entries go when the shard needs room (the expired ones first)."""
    return f"{PREFIX}:cache:{shard}:index"


def cache_sizes(shard: str) -> str:
    """Hash: the shard's entry keys -> their bytes, and field "_bytes": the shard's total."""
    return f"{PREFIX}:cache:{shard}:sizes"


# Budget lifetimes. A counter outlives its period by BUDGET_COUNTER_RETENTION_S, so a settle that
# lands after the period rolled over (the request started before midnight) still finds its
# counter, and reports can read the previous period. A reservation hash outlives its deadline by
# RESERVATION_GRACE_S: expired reservations are released by the team's next reserve, so the hash
# must still be there then; it only expires on its own if the team reserves nothing for a week.
BUDGET_COUNTER_RETENTION_S = 35 * 86400
RESERVATION_GRACE_S = 7 * 86400


def events_dead_letter(team: str) -> str:
    """Stream of the team's spend entries the aggregator could not parse (poison): each is acked
    and copied here with `_source_id` and `_error`, so it never blocks the group."""
    return f"{PREFIX}:{team_tag(team)}:events:dead"


DEAD_LETTER_MAXLEN = 100_000  # approximate cap; a flood of poison must not exhaust memory


def archive_lock(team: str) -> str:
    """String with a TTL: held by the aggregator replica archiving the team's stream, so two
    replicas never write the cold tier of one team at the same time."""
    return f"{PREFIX}:{team_tag(team)}:archiving"


def external_cost_marker(team: str, cost_id: str) -> str:
    """String: set (NX) when an external cost with this idempotency id was posted; holds a digest
    of the request so a retry is recognised and a reuse with another body refused."""
    return f"{PREFIX}:{team_tag(team)}:extcost:{cost_id}"


def imported_events(team: str, day: str) -> str:
    """Set of the ids of events `spendgate import` appended for the team and UTC day (YYYYMMDD),
    so the same file imported twice adds nothing. It lives as long as the day's rollups."""
    return f"{PREFIX}:{team_tag(team)}:imported:{day}"


def external_services() -> str:
    """Hash: service name -> "<ServiceCategory>|<ServiceSubcategory>" of the posted external
    costs (set NX by the first post naming it): FOCUS gives every service name one category,
    so a later post classifying the same service otherwise is refused."""
    return f"{PREFIX}:extservices"


# Rollups are kept long enough for month-over-month reports (hourly) and a year of chargeback
# history plus a month of slack (daily); older raw events live in the cold-tier archive.
ROLLUP_HOURLY_TTL_S = 35 * 86400
ROLLUP_DAILY_TTL_S = 400 * 86400
EXTERNAL_COST_MARKER_TTL_S = 400 * 86400
# The recommendations' signal rollups (`rollupformat.SIGNAL_DIMENSIONS`): the current and the
# previous month, which is what a recommendations report reads.
ROLLUP_SIGNAL_TTL_S = 62 * 86400


def fsync_marker() -> str:
    """Counter incremented before a WAITAOF: a write of the waiting connection's own, so that
    the fsync it waits for covers every write acknowledged before it (`store.connect.fsynced`)."""
    return f"{PREFIX}:fsync"


# Rate limits: one integer per (rule, subject, kind, one-minute window), with the window's TTL.
def rate_count(rule: str, subject: str, kind: str, window: int) -> str:
    """Integer: requests or tokens this window's grants and reports add up to
    (`ratelimits/lua/take.lua`), expiring shortly after the window."""
    return f"{PREFIX}:{{rl:{rule}:{subject}}}:{kind}:{window}"


# Approvals (`gateway.policies.approvals`): few records, asked and decided by every replica and
# the CLI, so one slot holds them all and each change is one script.
_APPROVALS_TAG = "{approvals}"


def approval_records() -> str:
    """Hash: approval id -> the approval as JSON (who asked, for what, its status and grant)."""
    return f"{PREFIX}:{_APPROVALS_TAG}:records"


def approval_current() -> str:
    """Hash: "<key id>|<model>|<policy>" -> the id of that principal's current approval for
    that model and policy, so a repeated ask reuses it rather than asking again."""
    return f"{PREFIX}:{_APPROVALS_TAG}:current"


def approval_index() -> str:
    """Sorted set: approval id -> when it was first asked (epoch ms), for listing by time."""
    return f"{PREFIX}:{_APPROVALS_TAG}:index"


APPROVAL_RETENTION_S = 90 * 86400  # records asked longer ago than this are dropped
