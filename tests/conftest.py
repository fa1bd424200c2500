"""Shared fixtures: a mock upstream on a real socket, and gateways built from fixture configs.

`gateway_factory(config_file)` loads `tests/fixtures/<config_file>` with SPENDGATE_UPSTREAM_URL
pointing at the test's mock upstream, starts the app on a free port with a wall clock that starts
at a fixed moment (`tests.clock`), and returns a `Gateway` with its base URL, app, clock and a
ready key per team (created through the keyring, as `keys create` does).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.samples import Sample
    from redis.asyncio import Redis

    from gateway.metrics import Metrics
    from gateway.providers.mock import MockUpstream

FIXTURES = Path(__file__).parent / "fixtures"
ADMIN_KEY = "sk-sg-admin-test-key-0123456789"
SECRET_PATH = "/services/T000/B000/XXXXsecretXXXX"  # a webhook URL's token, as Slack's carry


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core, at most four. Each worker starts its own Redis and its own
    six-node cluster when a test asks for one, so more workers mostly add startup."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class Gateway:
    server: TestServer
    app: web.Application
    config_path: Path
    clock: Callable[[], float]
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def metrics(self) -> Metrics:
        from gateway.app.state import METRICS

        return self.app[METRICS]

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """The samples of `name` whose labels include `labels`."""
        return samples(self.metrics.registry, name, **labels)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return metric_sum(self.metrics.registry, name, **labels)


def samples(registry: CollectorRegistry, name: str, **labels: str) -> list[Sample]:
    """The samples of `name` in `registry` whose labels include `labels`."""
    return [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def metric_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in `registry` whose labels include `labels`."""
    return sum((sample.value for sample in samples(registry, name, **labels)), 0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_redis(port: int, proc: subprocess.Popen[bytes]) -> None:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not answer PING within 10 s")


@dataclass
class Receiver:
    """A webhook receiver on a real socket: what each hook name was posted, in order."""

    server: TestServer
    posts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    status: int = 200
    delay_s: float = 0.0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/{name}{SECRET_PATH}"))

    async def wait_for(
        self, name: str, count: int, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """The first `count` posts to `name`, once they have arrived."""
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.posts.get(name, ())) >= count), timeout_s
            )
        return self.posts[name][:count]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    state = Receiver(TestServer(app))

    async def hook(request: web.Request) -> web.Response:
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        body = await request.json()
        async with state.arrived:
            state.posts.setdefault(request.match_info["name"], []).append(body)
            state.arrived.notify_all()
        return web.Response(status=state.status, text="ok")

    app.router.add_post("/{name}/{rest:.*}", hook)
    await state.server.start_server()
    yield state
    await state.server.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """The port of a server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="session")
def real_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server for this test run: our own redis-server on a free port (so runs never
    collide), else $SPENDGATE_TEST_REDIS_URL. Skips when neither exists, unless
    SPENDGATE_REQUIRE_REDIS=1 (CI), where a missing Redis is a failure."""
    if os.environ.get("SPENDGATE_TEST_REDIS_URL"):
        yield os.environ["SPENDGATE_TEST_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("SPENDGATE_REQUIRE_REDIS") == "1":
            pytest.fail(
                "a real Redis is required (SPENDGATE_REQUIRE_REDIS=1) but redis-server "
                "is not installed and SPENDGATE_TEST_REDIS_URL is not set"
            )
        pytest.skip("no redis-server on PATH and SPENDGATE_TEST_REDIS_URL unset")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_redis(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@asynccontextmanager
async def local_store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A client of the local store (store.url: local://) as `serve` runs it: its own server on
    a data directory of the test's, started by `LocalServer`, stopped after."""
    from gateway.store.connect import close_store, open_store
    from gateway.store.server import LocalServer

    server = LocalServer(request.getfixturevalue("tmp_path") / "local-store")
    await server.start()
    client = await open_store(server.url)
    try:
        yield client
    finally:
        await close_store(client)
        await server.stop()


LAYOUTS = ("memory", "redis", "local", "cluster")


@asynccontextmanager
async def store_on(
    request: pytest.FixtureRequest, layout: str, redis_db: int
) -> AsyncIterator[Redis]:
    """An empty store of one layout for one test, for the contracts that hold on every layout
    (`LAYOUTS`): "memory" (in-process), "redis" (database `redis_db` of the test run's Redis,
    flushed before and after: each suite has its own), "local" (the local store's own server),
    "cluster" (the test run's Redis Cluster)."""
    from gateway.store.connect import close_store, open_store
    from tests.ledger import db_url

    if layout == "cluster":
        async with cluster_store(request) as client:
            yield client
        return
    if layout == "local":
        async with local_store(request) as client:
            yield client
        return
    url = "memory://"
    if layout == "redis":
        url = db_url(request.getfixturevalue("real_redis_url"), redis_db)
    client = await open_store(url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await close_store(client)


@pytest.fixture
async def mock_upstream() -> AsyncIterator[MockUpstream]:
    from gateway.providers.mock import MockUpstream

    async with MockUpstream() as mock:
        yield mock


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(
    mock_upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[GatewayFactory]:
    # Imported here so that unit tests of one module never depend on the whole app importing.
    from gateway.app.server import create_app
    from gateway.app.state import KEYRING
    from gateway.config.loader import load_config

    monkeypatch.setenv("SPENDGATE_UPSTREAM_URL", mock_upstream.base_url)
    monkeypatch.setenv("SPENDGATE_UPSTREAM_ROOT", mock_upstream.url)
    monkeypatch.setenv("SPENDGATE_ADMIN_KEY", ADMIN_KEY)
    started: list[TestServer] = []

    async def make(
        config_file: str = "gateway.yaml",
        teams: tuple[str, ...] = ("alpha", "beta"),
        copy: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> Gateway:
        """`clock`: the app's wall clock; by default one running from `tests.clock.T0`."""
        from tests.clock import RunningClock

        source = FIXTURES / config_file
        # A private copy, so a test can rewrite it to exercise hot reload.
        path = tmp_path / config_file if copy else source
        if copy:
            path.write_text(source.read_text())
        config = load_config(path)
        clock = clock or RunningClock()
        app = create_app(config, str(path), clock=clock)
        server = TestServer(app)
        await server.start_server()
        started.append(server)
        gateway = Gateway(server, app, path, clock)
        for team in teams:
            secret, _ = await app[KEYRING].create(team, project=f"{team}-project")
            gateway.keys[team] = secret
        return gateway

    yield make
    for server in started:
        await server.close()


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()


@pytest.fixture(scope="session")
def real_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The store URL of a Redis Cluster of this test run's own (3 primaries, 3 replicas on free
    ports, tests/cluster.py). Skips when redis-server is missing, unless
    SPENDGATE_REQUIRE_REDIS=1 (CI), where that is a failure."""
    from tests.cluster import LocalCluster, binaries

    if binaries() is None:
        if os.environ.get("SPENDGATE_REQUIRE_REDIS") == "1":
            pytest.fail(
                "a real Redis Cluster is required (SPENDGATE_REQUIRE_REDIS=1) but "
                "redis-server / redis-cli are not installed"
            )
        pytest.skip("no redis-server / redis-cli on PATH: cannot start a test cluster")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@asynccontextmanager
async def cluster_store(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A client of the session's Redis Cluster, empty at the start and the end of the test."""
    from gateway.store.connect import close_store, open_store

    client = await open_store(request.getfixturevalue("real_cluster_url"))
    await _flush_primaries(client)
    try:
        yield client
    finally:
        await _flush_primaries(client)
        await close_store(client)


async def _flush_primaries(client: Redis) -> None:
    """FLUSHDB on every node that is a primary now. Right after a failover (an earlier test's)
    the slot table a new client reads can still name the old primary, now a replica that
    refuses writes: each node is asked its role instead. A stopped node is passed over."""
    from redis.asyncio import Redis as Direct
    from redis.exceptions import ConnectionError as RedisConnectionError

    await client.initialize()  # type: ignore[attr-defined]  # the slot table: every node
    for node in client.get_nodes():  # type: ignore[attr-defined]
        direct = Direct(host=node.host, port=node.port)
        try:
            role = await direct.execute_command("ROLE")
            if role[0] in (b"master", "master"):
                await direct.flushdb()
        except (RedisConnectionError, OSError):
            continue
        finally:
            await direct.aclose()
