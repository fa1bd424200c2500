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
