"""`spendgate keys ...` against a running admin API (a small test app) and a shared store."""

from __future__ import annotations

import argparse
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import clikit
from gateway.app.admin_keys import admin_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import KEYRING, LIVE_CONFIG
from gateway.config.model import Config, ServerConfig, StoreConfig, TeamConfig
from gateway.store import keys_cli
from gateway.store.connect import close_store, open_store
from gateway.store.keys import Keyring

ADMIN_KEY = "sk-sg-admin-cli-test-0123456789"
NOW = 1_900_000_000.0  # the keyring's wall clock


@dataclass
class StubLiveConfig:
    current: Config


def make_config(store_url: str = "memory://", port: int = 8080) -> Config:
    return Config(
        source="<test>",
        server=ServerConfig(
            host="0.0.0.0", port=port, admin_key_hash=hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
        ),
        store=StoreConfig(url=store_url),
        providers={},
        models={},
        teams={"alpha": TeamConfig("alpha"), "beta": TeamConfig("beta")},
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = await open_store("memory://")
    app[KEYRING] = Keyring(redis, (), 30.0, wall_clock=lambda: NOW)
    yield
    await close_store(redis)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestServer]:
    monkeypatch.delenv(clikit.ADMIN_KEY_ENV, raising=False)
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(make_config())  # type: ignore[assignment]
    app.cleanup_ctx.append(_store_ctx)
    app.add_routes(admin_routes())
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate keys")
    keys_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await keys_cli.run_async(parse(*argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_create_list_revoke_through_the_admin_api(
    server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", url_of(server), "--admin-key", ADMIN_KEY)
    code, out, err = await cli(
        capsys, "create", *common, "--team", "alpha", "--project", "search", "--env", "prod",
        "--tag", "exp=a1", "--tag", "owner=ml", "--name", "svc",
    )  # fmt: skip
    assert code == 0, err
    secret = out.strip()
    assert out == secret + "\n" and secret.startswith("sk-sg-")  # the key alone, on its own line
    assert "not shown again" in err
    principal = await server.app[KEYRING].resolve(secret)
    assert principal is not None
    assert (principal.team, principal.project, principal.environment) == ("alpha", "search", "prod")
    assert dict(principal.tags) == {"exp": "a1", "owner": "ml"}

    code, out, _ = await cli(capsys, "list", *common)
    header, row = out.splitlines()
    assert header.split() == [
        "key_id",
        "name",
        "team",
        "role",
        "source",
        "project",
        "env",
        "workload",
        "created",
        "status",
    ]
    assert row.split()[:8] == [
        *(principal.key_id, "svc", "alpha", "client", "store", "search", "prod", "-")
    ]
    assert row.split()[-1] == "active" and secret not in out

    code, out, _ = await cli(capsys, "revoke", *common, principal.key_id)
    assert (code, out) == (0, f"revoked {principal.key_id}\n")
    assert await server.app[KEYRING].resolve(secret) is None
    # A second revoke says what happened instead of "revoked", and fails.
    code, out, err = await cli(capsys, "revoke", *common, principal.key_id)
    assert (code, out) == (1, "")
    assert f"{principal.key_id} was already revoked (" in err and "nothing changed" in err

    code, out, _ = await cli(capsys, "list", *common, "--team", "alpha")
    assert out.splitlines()[-1] == "(no keys)"
    code, out, _ = await cli(capsys, "list", *common, "--all", "--json")
    data = orjson.loads(out)["data"]
    assert [(k["key_id"], k["revoked"]) for k in data] == [(principal.key_id, True)]


async def test_reader_and_reporting_keys(
    server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", url_of(server), "--admin-key", ADMIN_KEY)
    code, out, err = await cli(capsys, "create", *common, "--role", "reporting", "--name", "fin")
    assert code == 0, err
    assert "created reporting key key_" in err and "(no team)" in err
    holder = await server.app[KEYRING].identify(out.strip())
    assert holder is not None and (holder.role, holder.team) == ("reporting", None)
    code, out, err = await cli(capsys, "create", *common, "--role", "reader", "--team", "beta")
    assert code == 0, err
    holder = await server.app[KEYRING].identify(out.strip())
    assert holder is not None and (holder.role, holder.team) == ("reader", "beta")
    code, out, err = await cli(capsys, "create", *common, "--role", "reader")
    assert (code, out) == (1, "") and "a reader key needs --team" in err
    code, out, err = await cli(capsys, "create", *common, "--role", "reporting", "--team", "beta")
    assert (code, out) == (1, "") and "it takes no team" in err
    code, out, _ = await cli(capsys, "list", *common)
    rows = [line.split() for line in out.splitlines()[1:]]
    assert sorted((r[2], r[3]) for r in rows) == [("-", "reporting"), ("beta", "reader")]


async def test_json_output(server: TestServer, capsys: pytest.CaptureFixture[str]) -> None:
    common = ("--url", url_of(server), "--admin-key", ADMIN_KEY, "--json")
    code, out, _ = await cli(capsys, "create", *common, "--team", "beta")
    created = orjson.loads(out)
    assert code == 0 and created["key"].startswith("sk-sg-") and created["team"] == "beta"
    code, out, _ = await cli(capsys, "revoke", *common, created["key_id"])
    revoked = orjson.loads(out)
    assert (revoked["key_id"], revoked["revoked"]) == (created["key_id"], True)
    assert revoked["already_revoked"] is False and revoked["revoked_at"] == NOW


async def test_errors_from_the_api(server: TestServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of(server)
    code, _, err = await cli(capsys, "list", "--url", url, "--admin-key", "sk-sg-wrong")
    assert code == 1 and "invalid admin key" in err and "SPENDGATE_ADMIN_KEY" in err
    code, _, err = await cli(
        capsys, "create", "--url", url, "--admin-key", ADMIN_KEY, "--team", "gamma"
    )
    assert code == 1 and "unknown team 'gamma'" in err and "HTTP 400" in err
    code, _, err = await cli(capsys, "revoke", "--url", url, "--admin-key", ADMIN_KEY, "key_0")
    assert code == 1 and "no key with id 'key_0'" in err


async def test_admin_key_from_env_or_raw_yaml(
    server: TestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url = url_of(server)
    monkeypatch.setenv(clikit.ADMIN_KEY_ENV, ADMIN_KEY)
    assert (await cli(capsys, "list", "--url", url))[0] == 0
    monkeypatch.delenv(clikit.ADMIN_KEY_ENV)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "server:\n  admin_key: ${SG_TEST_SURELY_UNSET:-"
        + ADMIN_KEY
        + "}\nstore:\n  url: memory://\n"
    )
    assert (await cli(capsys, "list", "--url", url, "--config", str(config)))[0] == 0
    config.write_text("server: {}\n")
    code, _, err = await cli(capsys, "list", "--url", url, "--config", str(config))
    assert code == 1 and "no admin key" in err


async def test_embedded_store_goes_to_the_configured_gateway(
    server: TestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # server.host 0.0.0.0 is reached on loopback; the port is the test server's.
    config = make_config("memory://", port=int(server.port or 0))
    monkeypatch.setattr(clikit, "load_config", lambda path: config)
    code, out, err = await cli(capsys, "create", "--admin-key", ADMIN_KEY, "--team", "alpha")
    assert code == 0, err
    assert await server.app[KEYRING].resolve(out.strip()) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_gateway_running(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code = keys_cli.run(parse("list", "--url", url, "--admin-key", ADMIN_KEY))
    err = capsys.readouterr().err
    assert code == 1
    assert f"no spendgate gateway answers at {url}: start one with `spendgate serve`" in err


async def test_shared_store_is_used_directly(
    real_redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_url = urlsplit(real_redis_url)._replace(path="/15").geturl()
    redis = await open_store(store_url)
    await redis.flushdb()
    config = make_config(store_url, port=_free_port())  # no gateway there: must not be needed
    monkeypatch.setattr(clikit, "load_config", lambda path: config)
    try:
        code, out, err = await cli(capsys, "create", "--team", "beta", "--workload", "batch")
        assert code == 0, err
        principal = await Keyring(redis, (), 30.0).resolve(out.strip())
        assert principal is not None and principal.workload == "batch"
        code, out, _ = await cli(capsys, "list", "--json")
        data: list[dict[str, Any]] = orjson.loads(out)["data"]
        assert [k["key_id"] for k in data] == [principal.key_id]
        code, _, err = await cli(capsys, "create", "--team", "gamma")
        assert code == 1 and "unknown team 'gamma'" in err
        assert (await cli(capsys, "revoke", principal.key_id))[0] == 0
        assert await Keyring(redis, (), 30.0).resolve(out.strip()) is None
    finally:
        await redis.flushdb()
        await close_store(redis)


def test_bad_tag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse("create", "--team", "a", "--tag", "novalue")
    assert info.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
