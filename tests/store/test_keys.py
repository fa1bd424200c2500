"""Keyring against both stores: embedded fakeredis and a real Redis (db 15 of the test server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import rediskeys
from gateway.config.model import DeclaredKey
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.store import keys as keys_module
from gateway.store.keys import KeyInfo, Keyring, hash_key, key_id_for, new_key
from gateway.types import Principal
from tests.clock import FakeClock
from tests.conftest import LAYOUTS, store_on

TTL = 30.0
DECLARED_SECRET = "sk-sg-declared-in-yaml-0123456789"


@pytest.fixture(params=LAYOUTS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    # On Redis, the test run's own server's db 15: only this db is ever flushed.
    async with store_on(request, request.param, 15) as r:
        yield r


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def declared_key() -> DeclaredKey:
    key_hash = hash_key(DECLARED_SECRET)
    principal = Principal(key_id=key_id_for(key_hash), team="alpha", project="yaml-project")
    return DeclaredKey(key_hash=key_hash, principal=principal)


@pytest.fixture
def keyring(store: Redis, clock: FakeClock) -> Keyring:
    return Keyring(store, (declared_key(),), TTL, clock)


def count_calls(monkeypatch: pytest.MonkeyPatch, store: Redis, name: str) -> list[object]:
    """Record every call of `store.<name>` (the real method still runs)."""
    calls: list[object] = []
    original: Callable[..., Awaitable[object]] = getattr(store, name)

    async def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, name, counting)
    return calls


def test_key_helpers() -> None:
    secret = new_key()
    assert secret.startswith("sk-sg-") and len(secret) > 40
    assert new_key() != secret
    digest = hash_key(secret)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert key_id_for(digest) == "key_" + digest[:12]


async def test_create_then_resolve(keyring: Keyring) -> None:
    secret, info = await keyring.create(
        "alpha",
        project="search",
        environment="prod",
        workload="chat",
        tags={"cost-center": "42"},
        name="search-api",
    )
    assert secret.startswith("sk-sg-")
    assert info.key_id == key_id_for(hash_key(secret))
    assert (info.team, info.source, info.revoked) == ("alpha", "store", False)
    principal = await keyring.resolve(secret)
    assert principal == Principal(
        key_id=info.key_id,
        team="alpha",
        project="search",
        environment="prod",
        workload="chat",
        tags={"cost-center": "42"},
        name="search-api",
    )
    assert await keyring.resolve(secret + "x") is None


async def test_a_fresh_keyring_reads_keys_from_redis(keyring: Keyring, store: Redis) -> None:
    secret, info = await keyring.create("beta")
    other = Keyring(store, (), TTL)
    principal = await other.resolve(secret)
    assert principal is not None and principal.key_id == info.key_id
    assert principal.project is None and dict(principal.tags) == {}


async def test_cache_hit_does_no_io(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = await keyring.create("alpha")
    calls = count_calls(monkeypatch, store, "hgetall")
    for _ in range(5):
        assert await keyring.resolve(secret) is not None
    assert len(calls) == 1


async def test_a_burst_of_requests_with_an_unseen_key_reads_it_once(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, info = await keyring.create("alpha")
    cold = Keyring(store, (), TTL)  # a replica that has not seen the key
    calls = count_calls(monkeypatch, store, "hgetall")
    found = await asyncio.gather(*(cold.resolve(secret) for _ in range(50)))
    assert {p.key_id for p in found if p is not None} == {info.key_id}
    assert None not in found
    assert len(calls) == 1


class HeldReads:
    """`store.hgetall` held until `release` is set, its calls counted; the first answers
    `first` (a record as read earlier) when given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Redis, first: Any = None) -> None:
        self.release = asyncio.Event()
        self.count = 0
        original = store.hgetall

        async def held(*args: Any) -> Any:
            self.count += 1
            nth = self.count
            await self.release.wait()
            answer = await original(*args)
            return first if nth == 1 and first is not None else answer

        monkeypatch.setattr(store, "hgetall", held)


async def test_a_caller_that_goes_away_does_not_cancel_the_others_read(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, info = await keyring.create("alpha")
    cold = Keyring(store, (), TTL)
    reads = HeldReads(monkeypatch, store)
    first = asyncio.create_task(cold.resolve(secret))
    second = asyncio.create_task(cold.resolve(secret))
    await asyncio.sleep(0)  # both are waiting on the one read
    first.cancel()
    reads.release.set()
    principal = await second
    assert principal is not None and principal.key_id == info.key_id
    assert first.cancelled() and reads.count == 1


async def test_a_read_begun_before_a_revoke_is_not_joined_after_it(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, info = await keyring.create("alpha")
    cold = Keyring(store, (), TTL)
    as_issued = await store.hgetall(rediskeys.key_record(hash_key(secret)))
    reads = HeldReads(monkeypatch, store, first=as_issued)  # the first read predates the revoke
    before = asyncio.create_task(cold.resolve(secret))
    await asyncio.sleep(0)
    await cold.revoke(info.key_id)  # here: this replica's cached answers are stale now
    after = asyncio.create_task(cold.resolve(secret))
    await asyncio.sleep(0)
    reads.release.set()
    seen_before = await before
    assert seen_before is not None and seen_before.key_id == info.key_id
    assert await after is None  # its own read, after the revoke
    assert reads.count == 2


async def test_revoke_elsewhere_is_seen_after_the_ttl(
    keyring: Keyring, store: Redis, clock: FakeClock
) -> None:
    secret, info = await keyring.create("alpha")
    assert await keyring.resolve(secret) is not None
    other = Keyring(store, (), TTL, clock)
    assert await other.revoke(info.key_id) is not None
    assert await other.resolve(secret) is None
    clock.advance(TTL - 1)
    assert await keyring.resolve(secret) is not None  # still cached on this replica
    clock.advance(2)
    assert await keyring.resolve(secret) is None


async def test_revoke_here_takes_effect_at_once_and_keeps_the_record(
    store: Redis, clock: FakeClock
) -> None:
    wall = FakeClock(1000.0)
    keyring = Keyring(store, (), TTL, clock, wall_clock=wall)
    secret, info = await keyring.create("alpha", name="old")
    assert await keyring.resolve(secret) is not None
    wall.advance(60)
    first = await keyring.revoke(info.key_id)
    assert first is not None and (first.revoked_at, first.already) == (1060.0, False)
    assert await keyring.resolve(secret) is None
    # Again: it changes nothing (the first revoke's time stays for audit) and says so.
    wall.advance(60)
    again = await keyring.revoke(info.key_id)
    assert again is not None and (again.revoked_at, again.already) == (1060.0, True)
    record = await store.hgetall(rediskeys.key_record(hash_key(secret)))
    assert record[b"revoked"] == b"1" and record[b"team"] == b"alpha"
    assert record[b"revoked_at"] == b"1060.0"
    assert await store.sismember(rediskeys.key_index(), hash_key(secret))


async def test_revoke_unknown_or_malformed_ids(keyring: Keyring) -> None:
    await keyring.create("alpha")
    assert await keyring.revoke("key_000000000000") is None
    for bad in ("key_*", "key_", "nonsense", "key_0123456789abX"):
        assert await keyring.revoke(bad) is None


async def test_negative_caching(
    keyring: Keyring, store: Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_key()
    calls = count_calls(monkeypatch, store, "hgetall")
    assert await keyring.resolve(secret) is None
    assert await keyring.resolve(secret) is None
    assert len(calls) == 1
    # The key is created (say, on another replica) right after the miss was cached:
    monkeypatch.setattr(keys_module, "new_key", lambda: secret)
    await Keyring(store, (), TTL).create("alpha")
    assert await keyring.resolve(secret) is None
    clock.advance(5.5)  # negative entries live far shorter than the positive TTL
    assert await keyring.resolve(secret) is not None
    assert len(calls) == 2


async def test_revoked_keys_are_negatively_cached(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, info = await keyring.create("alpha")
    await keyring.revoke(info.key_id)
    calls = count_calls(monkeypatch, store, "hgetall")
    for _ in range(3):
        assert await keyring.resolve(secret) is None
    assert len(calls) == 1


async def test_cache_is_bounded(store: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = Keyring(store, (), TTL, max_entries=3)
    secrets = [(await keyring.create("alpha"))[0] for _ in range(5)]
    for secret in secrets:
        assert await keyring.resolve(secret) is not None
    calls = count_calls(monkeypatch, store, "hgetall")
    for secret in secrets[-3:]:
        await keyring.resolve(secret)
    assert calls == []  # the three most recent are cached...
    await keyring.resolve(secrets[0])
    assert len(calls) == 1  # ...the oldest was evicted


async def test_declared_keys(
    keyring: Keyring, store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, store, "hgetall")
    principal = await keyring.resolve(DECLARED_SECRET)
    assert principal is not None and principal.team == "alpha"
    assert calls == []
    with pytest.raises(InvalidRequest, match=r"under teams\.alpha\.keys: remove it there"):
        await keyring.revoke(declared_key().principal.key_id)
    listed = await keyring.list()
    assert [(i.key_id, i.source, i.created_at) for i in listed] == [
        (declared_key().principal.key_id, "config", None)
    ]


async def test_a_config_key_name_is_refused_in_its_team(store: Redis, clock: FakeClock) -> None:
    key_hash = hash_key(DECLARED_SECRET)
    named = Principal(key_id=key_id_for(key_hash), team="alpha", name="ingest")
    keyring = Keyring(store, (DeclaredKey(key_hash, named),), TTL, clock)
    with pytest.raises(InvalidRequest, match=r"already has a key named 'ingest'") as info:
        await keyring.create("alpha", name="ingest")
    assert (info.value.code, info.value.param) == ("key_name_taken", "name")
    assert await store.scard(rediskeys.key_index()) == 0  # nothing was stored
    _, other_team = await keyring.create("beta", name="ingest")
    _, store_twin = await keyring.create("alpha", name="ingest-2")
    # Store keys may share a name (rotation: a new key, then the old one revoked).
    _, rotated = await keyring.create("alpha", name="ingest-2")
    assert len({other_team.key_id, store_twin.key_id, rotated.key_id}) == 3


async def test_set_declared_replaces_keys_and_clears_the_cache(
    keyring: Keyring, store: Redis, clock: FakeClock
) -> None:
    secret, info = await keyring.create("alpha")
    assert await keyring.resolve(secret) is not None
    await Keyring(store, (), TTL).revoke(info.key_id)
    keyring.set_declared(())
    assert await keyring.resolve(DECLARED_SECRET) is None
    assert await keyring.resolve(secret) is None  # the cache was dropped, not just the YAML keys


async def test_list_filters_and_orders(keyring: Keyring, clock: FakeClock) -> None:
    wall = iter(range(100, 200))
    keyring._wall_clock = lambda: float(next(wall))
    _, a1 = await keyring.create("alpha", name="a1")
    _, b1 = await keyring.create("beta", name="b1")
    _, a2 = await keyring.create("alpha", name="a2")
    await keyring.revoke(a1.key_id)
    declared_id = declared_key().principal.key_id

    def ids(infos: list[KeyInfo]) -> list[str]:
        return [i.key_id for i in infos]

    assert ids(await keyring.list()) == [b1.key_id, a2.key_id, declared_id]
    assert ids(await keyring.list("alpha")) == [a2.key_id, declared_id]
    everything = await keyring.list(include_revoked=True)
    assert ids(everything) == [a1.key_id, b1.key_id, a2.key_id, declared_id]
    revoked = everything[0]
    assert revoked.revoked and revoked.revoked_at is not None and revoked.created_at == 100.0
    assert ids(await keyring.list("nobody")) == []


async def test_create_checks_the_team(keyring: Keyring) -> None:
    with pytest.raises(InvalidRequest, match="unknown team 'gamma'") as info:
        await keyring.create("gamma", known_teams={"alpha", "beta"})
    assert info.value.param == "team"
    with pytest.raises(InvalidRequest):
        await keyring.create("")
    _, created = await keyring.create("beta", known_teams={"alpha", "beta"})
    assert created.team == "beta"


async def test_only_hashes_are_stored(keyring: Keyring, store: Redis) -> None:
    created = [await keyring.create("alpha", name=f"k{i}", tags={"t": "v"}) for i in range(3)]
    await keyring.revoke(created[0][1].key_id)
    dump: list[bytes] = []
    async for name in store.scan_iter(match="*"):
        dump.append(name)
        kind = await store.type(name)
        if kind == b"hash":
            for field, value in (await store.hgetall(name)).items():
                dump += [field, value]
        elif kind == b"set":
            dump += list(await store.smembers(name))
        elif kind == b"string" and name == rediskeys.fsync_marker().encode():
            dump.append(await store.get(name))  # a counter (see store.connect.fsynced)
        else:
            pytest.fail(f"unexpected key type {kind!r} at {name!r}")
    blob = b"\n".join(dump)
    for secret, info in created:
        assert secret.encode() not in blob
        assert secret.removeprefix("sk-sg-").encode()[:16] not in blob
        assert hash_key(secret).encode() in blob  # stored by digest
        # The public view never carries the full digest either.
        assert hash_key(secret) not in str(info.to_dict())


async def test_redis_outage(
    keyring: Keyring, store: Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = await keyring.create("alpha")
    assert await keyring.resolve(secret) is not None
    clock.advance(TTL + 1)

    async def down(*args: object, **kwargs: object) -> object:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(store, "hgetall", down)
    # A caller seen before keeps working on its expired entry...
    assert await keyring.resolve(secret) is not None
    # ...an unknown one gets a retryable 503, not a 401.
    with pytest.raises(ServiceUnavailable):
        await keyring.resolve(new_key())
    monkeypatch.setattr(store, "smembers", down)
    with pytest.raises(ServiceUnavailable):
        await keyring.list()


def test_key_info_to_dict() -> None:
    info = KeyInfo(
        key_id="key_0123456789ab",
        name=None,
        team="alpha",
        project="p",
        environment=None,
        workload=None,
        tags={"a": "b"},
        created_at=12.5,
        revoked=False,
        source="store",
    )
    assert info.to_dict() == {
        "key_id": "key_0123456789ab",
        "name": None,
        "team": "alpha",
        "project": "p",
        "environment": None,
        "workload": None,
        "tags": {"a": "b"},
        "created_at": 12.5,
        "revoked": False,
        "revoked_at": None,
        "source": "store",
        "role": "client",
    }


async def test_roles_are_kept_and_only_client_keys_send_traffic(
    keyring: Keyring, store: Redis, clock: FakeClock
) -> None:
    from gateway.errors import PermissionDenied

    reader, reader_info = await keyring.create("alpha", role="reader", name="finops")
    reporting, reporting_info = await keyring.create(None, role="reporting")
    assert (reader_info.role, reporting_info.team) == ("reader", None)
    # A fresh replica (nothing cached) reads the roles back from the store.
    other = Keyring(store, (), TTL, clock)
    for _ in range(2):  # from the store, then from the cache
        holder = await other.identify(reader)
        assert holder is not None and (holder.role, holder.team) == ("reader", "alpha")
        holder = await other.identify(reporting)
        assert holder is not None and (holder.role, holder.team) == ("reporting", None)
        for secret in (reader, reporting):
            with pytest.raises(PermissionDenied) as caught:
                await other.resolve(secret)
            assert caught.value.code == "read_only_key"
            assert secret not in caught.value.message
    listed = {info.key_id: info for info in await other.list()}
    assert listed[reporting_info.key_id].to_dict()["team"] is None
    assert listed[reader_info.key_id].role == "reader"
    assert [i.key_id for i in await other.list("alpha")] == [reader_info.key_id]
    # A record written before keys had roles is a client key.
    client, client_info = await keyring.create("alpha")
    assert "role" not in await store.hgetall(rediskeys.key_record(hash_key(client)))
    principal = await other.resolve(client)
    assert principal is not None and principal.key_id == client_info.key_id


@pytest.mark.parametrize(
    ("team", "role", "attribution", "param"),
    [
        (None, "client", {}, "team"),
        ("alpha", "reporting", {}, "team"),
        ("alpha", "reader", {"project": "p"}, "project"),
        (None, "reporting", {"tags": {"a": "b"}}, "tags"),
    ],
)
async def test_a_role_fits_its_team_and_attribution(
    keyring: Keyring, team: str | None, role: Any, attribution: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await keyring.create(team, role=role, **attribution)
    assert caught.value.param == param
    assert await keyring.list(include_revoked=True) == [
        info for info in await keyring.list(include_revoked=True) if info.source == "config"
    ]
