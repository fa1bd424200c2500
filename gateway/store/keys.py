"""Virtual keys: issuing, resolving and revoking the `sk-sg-...` secrets callers present.

Only sha256 digests are kept (in Redis and in the YAML); a key's public id is `key_` plus 12 hex
digits of the digest. `Keyring.resolve` runs on every request, so an in-process TTL cache answers
most calls without I/O: a revoke reaches the other replicas within `server.key_cache_ttl_s`.

A key has a role: `client` keys send traffic (and may read their team's spend); `reader` keys
only read their team's spend; `reporting` keys belong to no team and only read the org's
reports. `resolve` (the request path) refuses the read-only roles; `identify` answers any.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import orjson
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.errors import InvalidRequest, PermissionDenied, ServiceUnavailable
from gateway.flights import Flights
from gateway.store.connect import fsynced
from gateway.types import EMPTY_TAGS, Principal

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

    from gateway.config.model import DeclaredKey

KEY_PREFIX = "sk-sg-"
KeySource = Literal["store", "config"]
KeyRole = Literal["client", "reader", "reporting"]
KEY_ROLES: tuple[KeyRole, ...] = ("client", "reader", "reporting")

_KEY_ID = re.compile(r"key_[0-9a-f]{12}")
# Unknown keys are remembered briefly (a client retrying a bad key must not hit Redis every
# time) but not for long, and in a smaller cache of their own, so a flood of random keys can
# neither evict the good entries nor keep a just-created key out for a full TTL.
# The same short TTL bounds how long an expired entry is served while Redis is unreachable.
_NEGATIVE_TTL_CAP_S = 5.0
_DEFAULT_MAX_ENTRIES = 100_000
_LIST_BATCH = 500


def hash_key(secret: str) -> str:
    """The sha256 hex digest under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> str:
    """A fresh secret: 256 random bits, so an unsalted sha256 of it is safe to store."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_id_for(key_hash: str) -> str:
    """The public id of a key: safe to log, show in lists and put in spend events."""
    return "key_" + key_hash[:12]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What an admin sees of a key. `created_at` (epoch seconds) is None for declared keys."""

    key_id: str
    name: str | None
    team: str | None  # None only for reporting keys, which belong to no team
    project: str | None
    environment: str | None
    workload: str | None
    tags: Mapping[str, str]
    created_at: float | None
    revoked: bool
    source: KeySource
    revoked_at: float | None = field(default=None)
    role: KeyRole = "client"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready; there is no secret or full digest in a KeyInfo to leak."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "team": self.team,
            "project": self.project,
            "environment": self.environment,
            "workload": self.workload,
            "tags": dict(self.tags),
            "created_at": self.created_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "source": self.source,
            "role": self.role,
        }

    @classmethod
    def declared(cls, key: DeclaredKey) -> KeyInfo:
        p = key.principal
        return cls(
            key_id=p.key_id,
            name=p.name,
            team=p.team,
            project=p.project,
            environment=p.environment,
            workload=p.workload,
            tags=p.tags,
            created_at=None,
            revoked=False,
            source="config",
            role=key.role,
        )

    def holder(self) -> Holder:
        return Holder(self.key_id, self.role, None if self.team is None else self.principal())

    def principal(self) -> Principal:
        assert self.team is not None, "a reporting key has no principal"
        tags = MappingProxyType(dict(self.tags)) if self.tags else EMPTY_TAGS
        return Principal(
            key_id=self.key_id,
            team=self.team,
            project=self.project,
            environment=self.environment,
            workload=self.workload,
            tags=tags,
            name=self.name,
        )


@dataclass(frozen=True, slots=True)
class Holder:
    """Whoever presented a key: its role and, for a team's key, its team and attribution."""

    key_id: str
    role: KeyRole
    principal: Principal | None  # None for reporting keys

    @property
    def team(self) -> str | None:
        return None if self.principal is None else self.principal.team


@dataclass(frozen=True, slots=True)
class Revoked:
    """The answer to a revoke: when the key was revoked, and whether it already was."""

    key_id: str
    revoked_at: float  # epoch seconds: the first revoke's
    already: bool  # revoked by an earlier call: nothing changed

    def to_dict(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "revoked": True,
            "revoked_at": self.revoked_at,
            "already_revoked": self.already,
        }


class Keyring:
    """Resolves secrets to principals (cache -> declared keys -> Redis) and manages store keys.

    The cache keeps digests, never secrets. Eviction drops the entry refreshed longest ago
    (insertion order; entries are re-inserted on refresh), which is LRU-ish without paying a
    reorder on every hit.
    """

    def __init__(
        self,
        redis: Redis,
        declared: tuple[DeclaredKey, ...] = (),
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_entries: int = _DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_known = max_entries
        self._max_unknown = max(1, max_entries // 10)
        self._known: OrderedDict[str, tuple[float, Holder]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        # Bumped whenever cached answers become wrong (reload, revoke); a Redis read that
        # started before the bump must not write its now-stale answer into the cache.
        self._generation = 0
        self._declared: dict[str, DeclaredKey] = {}
        self._declared_holders: dict[str, Holder] = {}
        self._ttl_s = ttl_s
        # Reads of a key's record in flight, by digest and generation.
        self._loading: Flights[tuple[str, int], Holder | None] = Flights()
        self.set_declared(declared, ttl_s=ttl_s)

    def set_declared(
        self, declared: tuple[DeclaredKey, ...], *, ttl_s: float | None = None
    ) -> None:
        """Install a (re)loaded config's keys; cached answers may be wrong now, so drop them."""
        self._declared = {key.key_hash: key for key in declared}
        self._declared_holders = {
            key.key_hash: Holder(key.principal.key_id, key.role, key.principal) for key in declared
        }
        if ttl_s is not None:
            self._ttl_s = ttl_s
        self.clear_cache()

    def clear_cache(self) -> None:
        self._known.clear()
        self._unknown.clear()
        self._generation += 1

    async def resolve(self, secret: str) -> Principal | None:
        """The principal a secret authenticates for traffic, or None for unknown and revoked
        keys; a read-only key (reader, reporting) is refused with a 403."""
        key_hash = hash_key(secret)
        known = self._known.get(key_hash)
        if known is not None and known[0] > self._clock():
            holder: Holder | None = known[1]
        else:
            holder = await self._identify(key_hash, known)
        if holder is None:
            return None
        if holder.role != "client" or holder.principal is None:
            raise PermissionDenied(
                f"{holder.key_id} is a read-only {holder.role} key: it reads spend "
                "(GET /v1/spendgate/usage) and cannot send requests",
                code="read_only_key",
            )
        return holder.principal

    async def identify(self, secret: str) -> Holder | None:
        """Who a secret belongs to, whatever its role; None for unknown and revoked keys."""
        key_hash = hash_key(secret)
        known = self._known.get(key_hash)
        if known is not None and known[0] > self._clock():
            return known[1]
        return await self._identify(key_hash, known)

    async def _identify(self, key_hash: str, known: tuple[float, Holder] | None) -> Holder | None:
        unknown_until = self._unknown.get(key_hash)
        if unknown_until is not None and unknown_until > self._clock():
            return None
        declared = self._declared_holders.get(key_hash)
        if declared is not None:
            return declared
        return await self._load(key_hash, stale=known[1] if known else None)

    async def _load(self, key_hash: str, *, stale: Holder | None) -> Holder | None:
        """The key's record read from Redis, once for every request that asks meanwhile: a
        burst of new requests with a key this replica has not seen (a cold start, a deploy)
        is one read, not one each (each wanting a pooled connection at the same moment)."""
        # A read that began before the cached answers went stale (a revoke, a reload) is not
        # joined: the request gets what Redis says now.
        return await self._loading.run(
            (key_hash, self._generation), lambda: self._fetch(key_hash, stale)
        )

    async def _fetch(self, key_hash: str, stale: Holder | None) -> Holder | None:
        generation = self._generation
        try:
            raw = await self._redis.hgetall(rediskeys.key_record(key_hash))
        except RedisError as exc:
            # A Redis outage must not log out callers we saw recently: serve the expired entry,
            # and keep serving it a little while so each request does not wait on a dead server.
            if stale is not None:
                self._remember(key_hash, stale, ttl_s=min(self._ttl_s, _NEGATIVE_TTL_CAP_S))
                return stale
            raise ServiceUnavailable("the key store is unreachable; try again shortly") from exc
        record = _decode(raw)
        holder = None
        if record and record.get("revoked") != "1":
            holder = _info_from_record(key_hash, record).holder()
        if generation == self._generation:
            self._remember(key_hash, holder, ttl_s=self._ttl_s)
        return holder

    def _remember(self, key_hash: str, holder: Holder | None, *, ttl_s: float) -> None:
        now = self._clock()
        # pop-then-insert moves the entry to the young end of the eviction order.
        self._known.pop(key_hash, None)
        self._unknown.pop(key_hash, None)
        if holder is None:
            self._unknown[key_hash] = now + min(self._ttl_s, _NEGATIVE_TTL_CAP_S)
            if len(self._unknown) > self._max_unknown:
                self._unknown.popitem(last=False)
        else:
            self._known[key_hash] = (now + ttl_s, holder)
            if len(self._known) > self._max_known:
                self._known.popitem(last=False)

    async def create(
        self,
        team: str | None,
        *,
        project: str | None = None,
        environment: str | None = None,
        workload: str | None = None,
        tags: Mapping[str, str] | None = None,
        name: str | None = None,
        known_teams: Collection[str] | None = None,
        role: KeyRole = "client",
    ) -> tuple[str, KeyInfo]:
        """Issue a key. The secret is returned here once and never stored or shown again."""
        attribution = {"project": project, "environment": environment, "workload": workload}
        _check_role(role, team, [k for k, v in attribution.items() if v] + ["tags"] * bool(tags))
        if team is not None and known_teams is not None and team not in known_teams:
            known = ", ".join(sorted(known_teams)) or "none"
            raise InvalidRequest(
                f"unknown team {team!r}: teams in the config are {known}",
                param="team",
                code="unknown_team",
            )
        if team is not None and name is not None:
            self._check_name_free(team, name)
        secret = new_key()
        key_hash = hash_key(secret)
        info = KeyInfo(
            key_id=key_id_for(key_hash),
            name=name,
            team=team,
            project=project,
            environment=environment,
            workload=workload,
            tags=dict(tags or {}),
            created_at=self._wall_clock(),
            revoked=False,
            source="store",
            role=role,
        )
        with _store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(rediskeys.key_record(key_hash), mapping=_record(info))
                pipe.sadd(rediskeys.key_index(), key_hash)
                await pipe.execute()
            await fsynced(self._redis)  # a key handed out must survive a crash
        return secret, info

    async def list(
        self, team: str | None = None, include_revoked: bool = False
    ) -> builtins.list[KeyInfo]:
        """Store keys and declared keys, oldest first; declared keys (no creation time) last."""
        infos = [KeyInfo.declared(key) for key in self._declared.values()]
        with _store_errors():
            hashes = [_text(h) for h in await self._redis.smembers(rediskeys.key_index())]
            for start in range(0, len(hashes), _LIST_BATCH):
                batch = hashes[start : start + _LIST_BATCH]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key_hash in batch:
                        pipe.hgetall(rediskeys.key_record(key_hash))
                    raws = await pipe.execute()
                infos += [
                    _info_from_record(h, _decode(raw))
                    for h, raw in zip(batch, raws, strict=True)
                    if raw
                ]
        infos = [
            info
            for info in infos
            if (team is None or info.team == team) and (include_revoked or not info.revoked)
        ]
        infos.sort(key=lambda i: (i.created_at is None, i.created_at or 0.0, i.key_id))
        return infos

    def _check_name_free(self, team: str, name: str) -> None:
        # Budgets and reports name keys; a store key named like a config key of its team would
        # be two keys no list or `scope: key` match could tell apart.
        for key in self._declared.values():
            if key.principal.team == team and key.principal.name == name:
                raise InvalidRequest(
                    f"team {team!r} already has a key named {name!r} in the config file "
                    f"(teams.{team}.keys): choose another name",
                    param="name",
                    code="key_name_taken",
                )

    async def revoke(self, key_id: str) -> Revoked | None:
        """Mark a store key revoked (the record stays for audit). None if there is no such key;
        revoking it again changes nothing and says so (`Revoked.already`)."""
        for key_hash, key in self._declared.items():
            p = key.principal
            if key_id in (p.key_id, key_id_for(key_hash)):
                named = f" ({p.name})" if p.name else ""
                raise InvalidRequest(
                    f"{key_id}{named} is declared in the config file under teams.{p.team}.keys: "
                    "remove it there and reload (save the file or send SIGHUP); a config key "
                    "cannot be revoked through the store",
                    param="key_id",
                    code="key_declared_in_config",
                )
        if not _KEY_ID.fullmatch(key_id):
            return None  # also keeps glob characters out of the SSCAN pattern below
        with _store_errors():
            found = await self._find(key_id)
            if found is None:
                return None
            record = rediskeys.key_record(found)
            # One transaction: the first revoke's time is kept (audit), and a second one can
            # tell it came second.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(record, "revoked_at", repr(self._wall_clock()))
                pipe.hset(record, "revoked", "1")
                pipe.hget(record, "revoked_at")
                first, _, revoked_at = await pipe.execute()
            await fsynced(self._redis)  # a revoked key must stay revoked after a crash
        self._known.pop(found, None)
        self._generation += 1
        return Revoked(key_id, float(_text(revoked_at)), already=not first)

    async def _find(self, key_id: str) -> str | None:
        prefix = key_id.removeprefix("key_")
        matches = [
            _text(member)
            async for member in self._redis.sscan_iter(
                rediskeys.key_index(), match=prefix + "*", count=1000
            )
        ]
        if len(matches) > 1:
            # 48 bits of id: a collision needs ~16M keys, but never revoke the wrong one.
            raise InvalidRequest(f"{key_id} matches {len(matches)} keys", param="key_id")
        return matches[0] if matches else None


def _check_role(role: KeyRole, team: str | None, attribution: builtins.list[str]) -> None:
    """A client or reader key belongs to a team, a reporting key to none; only a client key
    sends traffic, so only it carries attribution."""
    if role not in KEY_ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(KEY_ROLES)}", param="role")
    if role == "reporting" and team is not None:
        raise InvalidRequest(
            "team: a reporting key reads every team's reports; it takes no team", param="team"
        )
    if role != "reporting" and not team:
        raise InvalidRequest(f"team: a {role} key needs its team", param="team")
    if role != "client" and attribution:
        raise InvalidRequest(
            f"{attribution[0]}: only a client key is attributed (a {role} key sends no traffic)",
            param=attribution[0],
        )


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailable("the key store is unreachable; try again shortly") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _record(info: KeyInfo) -> dict[FieldT, EncodableT]:
    """The Redis hash of a key (see rediskeys.key_record); absent fields mean None."""
    fields = {
        "key_id": info.key_id,
        "team": info.team,
        "project": info.project,
        "environment": info.environment,
        "workload": info.workload,
        "name": info.name,
        "tags": orjson.dumps(dict(info.tags), option=orjson.OPT_SORT_KEYS).decode(),
        "created_at": repr(info.created_at),
        "revoked": "1" if info.revoked else "0",
        # Absent on the records of older versions, whose keys are all client keys.
        "role": None if info.role == "client" else info.role,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _info_from_record(key_hash: str, record: Mapping[str, str]) -> KeyInfo:
    tags = orjson.loads(record["tags"]) if "tags" in record else {}
    revoked_at = record.get("revoked_at")
    return KeyInfo(
        key_id=record.get("key_id") or key_id_for(key_hash),
        name=record.get("name"),
        team=record.get("team"),
        project=record.get("project"),
        environment=record.get("environment"),
        workload=record.get("workload"),
        tags={str(k): str(v) for k, v in tags.items()},
        created_at=float(record["created_at"]) if "created_at" in record else None,
        revoked=record.get("revoked") == "1",
        source="store",
        revoked_at=float(revoked_at) if revoked_at else None,
        role=_role(record.get("role", "client")),
    )


def _role(text: str) -> KeyRole:
    for role in KEY_ROLES:
        if role == text:
            return role
    raise ValueError(f"a key record with an unknown role {text!r}")
