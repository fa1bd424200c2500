"""The admin API for keys, over a real socket: auth, validation, create / list / revoke."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app.admin_keys import admin_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import KEYRING, LIVE_CONFIG
from gateway.config.model import Config, DeclaredKey, ServerConfig, StoreConfig, TeamConfig
from gateway.store.connect import close_store, open_store
from gateway.store.keys import Keyring, hash_key, key_id_for
from gateway.types import Principal

ADMIN_KEY = "sk-sg-admin-test-0123456789"
DECLARED_SECRET = "sk-sg-declared-0123456789"
DECLARED_ID = key_id_for(hash_key(DECLARED_SECRET))
NOW = 1_900_000_000.0  # the keyring's wall clock: 2030-03-17


@dataclass
class StubLiveConfig:
    current: Config


def make_config(admin_key: str | None = ADMIN_KEY) -> Config:
    digest = hashlib.sha256(admin_key.encode()).hexdigest() if admin_key else None
    declared = DeclaredKey(
        key_hash=hash_key(DECLARED_SECRET),
        principal=Principal(key_id=DECLARED_ID, team="beta", name="beta-batch"),
    )
    return Config(
        source="<test>",
        server=ServerConfig(admin_key_hash=digest),
        store=StoreConfig(),
        providers={},
        models={},
        teams={"alpha": TeamConfig("alpha"), "beta": TeamConfig("beta")},
        keys=(declared,),
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = await open_store("memory://")
    app[KEYRING] = Keyring(redis, app[LIVE_CONFIG].current.keys, 30.0, wall_clock=lambda: NOW)
    yield
    await close_store(redis)


def make_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(config)  # type: ignore[assignment]
    app.cleanup_ctx.append(_store_ctx)
    app.add_routes(admin_routes())
    return app


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client_factory() -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(config: Config | None = None) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(make_app(config or make_config())))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(client_factory: ClientFactory) -> TestClient[web.Request, web.Application]:
    return await client_factory()


AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    return dict(body["error"])


async def test_admin_api_disabled_without_an_admin_key(client_factory: ClientFactory) -> None:
    client = await client_factory(make_config(admin_key=None))
    error = await error_of(await client.get("/admin/keys", headers=AUTH), 403)
    assert error["message"] == "admin API disabled: set server.admin_key"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-sg-wrong"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"x-sg-admin-key": "sk-sg-wrong"},
    ],
)
async def test_missing_or_wrong_admin_key(
    client: TestClient[web.Request, web.Application], headers: dict[str, str]
) -> None:
    for method, path in [
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("DELETE", "/admin/keys/key_x"),
    ]:
        error = await error_of(await client.request(method, path, headers=headers), 401)
        assert error["type"] == "authentication_error"


async def test_a_virtual_key_is_not_an_admin_key(
    client: TestClient[web.Request, web.Application],
) -> None:
    # A known key without the right: 403 (an unknown one is 401, above).
    resp = await client.get("/admin/keys", headers={"Authorization": f"Bearer {DECLARED_SECRET}"})
    error = await error_of(resp, 403)
    assert (error["type"], error["code"]) == ("permission_error", "admin_key_required")


async def test_create_list_revoke(client: TestClient[web.Request, web.Application]) -> None:
    body = {"team": "alpha", "project": "search", "tags": {"exp": "a1"}, "name": "svc"}
    resp = await client.post("/admin/keys", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    created = await resp.json()
    secret = created.pop("key")
    assert secret.startswith("sk-sg-")
    assert created["key_id"] == key_id_for(hash_key(secret))
    assert created["team"] == "alpha" and created["tags"] == {"exp": "a1"}
    assert created["source"] == "store" and created["revoked"] is False
    keyring = client.app[KEYRING]  # type: ignore[index]
    principal = await keyring.resolve(secret)
    assert principal is not None and principal.project == "search"

    listing = await (await client.get("/admin/keys", headers=AUTH)).json()
    assert [k["key_id"] for k in listing["data"]] == [created["key_id"], DECLARED_ID]
    assert secret not in str(listing) and hash_key(secret) not in str(listing)
    beta = await (await client.get("/admin/keys?team=beta", headers=AUTH)).json()
    assert [k["key_id"] for k in beta["data"]] == [DECLARED_ID]

    resp = await client.delete(f"/admin/keys/{created['key_id']}", headers=AUTH)
    assert resp.status == 200
    revoked = {"key_id": created["key_id"], "revoked": True, "revoked_at": NOW}
    assert await resp.json() == {**revoked, "already_revoked": False}
    assert await keyring.resolve(secret) is None
    # Again: nothing changes (the first revoke's time stays), and the answer says so.
    resp = await client.delete(f"/admin/keys/{created['key_id']}", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {**revoked, "already_revoked": True}
    active = await (await client.get("/admin/keys", headers=AUTH)).json()
    assert [k["key_id"] for k in active["data"]] == [DECLARED_ID]
    everything = await (
        await client.get("/admin/keys?include_revoked=true", headers={"x-sg-admin-key": ADMIN_KEY})
    ).json()
    assert [k["revoked"] for k in everything["data"]] == [True, False]


async def test_revoke_unknown_and_declared(
    client: TestClient[web.Request, web.Application],
) -> None:
    error = await error_of(await client.delete("/admin/keys/key_000000000000", headers=AUTH), 404)
    assert error["code"] == "key_not_found"
    error = await error_of(await client.delete(f"/admin/keys/{DECLARED_ID}", headers=AUTH), 400)
    assert error["code"] == "key_declared_in_config"
    # It names the YAML section the key is in, which is where it must be removed.
    assert "teams.beta.keys" in error["message"] and "beta-batch" in error["message"]


async def test_a_config_key_name_is_not_reused_in_its_team(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = {"team": "beta", "name": "beta-batch"}
    error = await error_of(await client.post("/admin/keys", json=body, headers=AUTH), 400)
    assert error["code"] == "key_name_taken" and error["param"] == "name"
    assert "teams.beta.keys" in error["message"]
    # Another team may use the name: its keys are its own.
    resp = await client.post("/admin/keys", json={**body, "team": "alpha"}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    listing = await (await client.get("/admin/keys", headers=AUTH)).json()
    rows = [(k["name"], k["team"], k["source"]) for k in listing["data"]]
    assert rows == [("beta-batch", "alpha", "store"), ("beta-batch", "beta", "config")]


@pytest.mark.parametrize(
    ("raw", "param", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b"{}", "team", "team: a client key needs its team"),
        (b'{"role": "reader"}', "team", "team: a reader key needs its team"),
        (b'{"role": "reporting", "team": "alpha"}', "team", "it takes no team"),
        (b'{"role": "admin"}', "role", "role: expected one of 'client', 'reader', 'reporting'"),
        (b'{"role": "reader", "team": "alpha", "project": "x"}', "project", "only a client key"),
        (b'{"role": "reporting", "tags": {"a": "b"}}', "tags", "only a client key"),
        (b'{"team": 3}', "team", "team: expected a string, got int 3"),
        (b'{"team": "gamma"}', "team", "unknown team 'gamma'"),
        (b'{"team": "alpha", "projet": "x"}', "projet", "unknown key 'projet' (did you mean"),
        (b'{"team": "alpha", "project": 7}', "project", "project: expected a string"),
        (b'{"team": "alpha", "name": ""}', "name", "name: must not be empty"),
        (b'{"team": "alpha", "tags": ["a"]}', "tags", "tags: expected a mapping, got list"),
        (b'{"team": "alpha", "tags": {"a": 1}}', "tags.a", "tags.a: expected a string"),
        (b'{"team": "alpha", "name": "' + b"n" * 201 + b'"}', "name", "at most 200 characters"),
    ],
)
async def test_create_validates_the_body(
    client: TestClient[web.Request, web.Application],
    raw: bytes,
    param: str | None,
    message: str,
) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    error = await error_of(await client.post("/admin/keys", data=raw, headers=headers), 400)
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("query", "param"),
    [("include_revoked=maybe", "include_revoked"), ("teams=alpha", "teams")],
)
async def test_list_validates_the_query(
    client: TestClient[web.Request, web.Application], query: str, param: str
) -> None:
    error = await error_of(await client.get(f"/admin/keys?{query}", headers=AUTH), 400)
    assert error["param"] == param
