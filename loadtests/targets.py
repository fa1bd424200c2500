"""The servers under test and the mock they all call: how each is configured, started on its own
core, authenticated against, and stopped.

`direct` is the mock itself (the reference every "added" figure subtracts); `bare` is
bare_proxy.py; `litellm` is LiteLLM's proxy from its own virtual environment; `spendgate` is
`spendgate serve` with the generated config (loadtests/config/spendgate.yaml plus overlays).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from loadtests import procs
from loadtests.scenarios import SCENARIOS

HERE = Path(__file__).parent
# The gateway (and its mock) run from this checkout, whatever the venv's editable install
# points at: a benchmark of a clean clone measures that clone.
REPO = HERE.parent
CHECKOUT = {"PYTHONPATH": str(REPO)}
LITELLM_VENV = HERE / ".venv-litellm"
SPENDGATE_TEMPLATE = HERE / "config" / "spendgate.yaml"

MOCK_KEY = "mock-upstream-key"
SPENDGATE_KEY = "sk-sg-loadtest-search-0001"
LITELLM_MASTER_KEY = "sk-litellm-loadtest-master-0001"
NAMES = ("direct", "bare", "litellm", "spendgate")
# On request only. `spendgate-w2` (`--redis --targets spendgate,spendgate-w2`): `serve --workers
# 2`, free to use every core, for how throughput scales from one worker to two.
# `spendgate-local` and `spendgate-redis`: spendgate on the local store and on a redis-server,
# whatever --redis/--memory say, to compare the two store layouts in one run.
EXTRA_NAMES = ("spendgate-w2", "spendgate-local", "spendgate-redis")
LOCAL_STORE = "local://"


@dataclass(frozen=True)
class Bench:
    """What every target shares in one run."""

    mock_url: str  # http://127.0.0.1:PORT, without /v1
    mock_pid: int
    workdir: Path  # generated configs (and server logs with --server-logs)
    server_core: int
    server_logs: bool = False
    overlays: tuple[Path, ...] = ()
    start_timeout_s: float = 120.0
    store_core: int = 0  # where a store server runs (Redis, the local store's)
    # spendgate's store: a Redis URL, "memory://" (in-process), or None: the local store (its
    # server moved to the generator's core, where --redis runs Redis).
    redis_url: str | None = None
    # The harness's redis-server, when one runs (--redis, or a spendgate-redis target).
    redis_server_url: str | None = None
    # A command the server runs under (instructions.py: valgrind's callgrind), or none.
    wrap: tuple[str, ...] = ()

    def log_for(self, name: str) -> Path | None:
        return self.workdir / f"{name}.log" if self.server_logs else None


@dataclass
class Running:
    """A target that is serving: where, as which process, and how long it took to start."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int
    startup_s: float | None  # None for `direct`: the mock is started once per run
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Processes of the target's store layout that run on the store's core, not the server's:
    # the local store's server, the aggregator.
    store_pids: tuple[int, ...] = ()
    aggregator: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
        if self.aggregator is not None:
            procs.stop(self.aggregator)


def start_mock(core: int, log: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    """The shared upstream, on the generator's core. Started through its module because
    `spendgate mock-upstream --port P` loses its options to argparse (see the README)."""
    port = procs.free_port()
    code = "import sys; from gateway.providers.mock.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "--port", str(port)]
    proc = procs.spawn(cmd, core=core, env=CHECKOUT, log=log)
    url = f"http://127.0.0.1:{port}"
    _ready(proc, port, {"Authorization": f"Bearer {MOCK_KEY}"}, time.monotonic(), 30.0)
    return proc, url


def start_redis(core: int) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away redis-server (no persistence) on the generator's core, as spendgate's store:
    in production Redis runs beside the gateway, not inside it."""
    port = procs.free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no"]
    proc = procs.spawn(cmd, core=core)
    deadline = time.monotonic() + 10
    while redis_command(port, "PING") != b"+PONG":
        if proc.poll() is not None or time.monotonic() > deadline:
            procs.stop(proc)
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_cluster(core: int, primaries: int = 3) -> tuple[list[subprocess.Popen[bytes]], str]:
    """A throw-away Redis Cluster of `primaries` primaries (no replicas, no persistence) on the
    generator's core, as spendgate's store: the layout where one Redis is outgrown."""
    found: list[tuple[subprocess.Popen[bytes], int]] = []
    workdir = tempfile.mkdtemp(prefix="spendgate-cluster-")  # fresh: no old nodes.conf
    try:
        while len(found) < primaries:
            port = _cluster_port()
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "no", "--cluster-enabled", "yes"]
            cmd += ["--cluster-config-file", f"nodes-{port}.conf", "--dir", workdir]
            proc = procs.spawn(cmd, core=core)
            deadline = time.monotonic() + 10
            while redis_command(port, "PING") != b"+PONG":
                if proc.poll() is not None or time.monotonic() > deadline:
                    procs.stop(proc)
                    raise RuntimeError("a cluster node did not start")
                time.sleep(0.02)
            found.append((proc, port))
        nodes = [f"127.0.0.1:{port}" for _, port in found]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while any(
            b"cluster_state:ok" not in redis_command(port, "CLUSTER INFO", 4096)
            for _, port in found
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.05)
    except BaseException:
        for proc, _ in found:
            procs.stop(proc)
        raise
    return [proc for proc, _ in found], "redis+cluster://" + ",".join(nodes)


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = random.randrange(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port


@contextlib.contextmanager
def redis_for(url: str | None) -> Iterator[str]:
    """`url`; without one, a throw-away redis-server's (`start_redis` on core 0, the generator's
    core in run.py) for the length of the block: what the stand-alone measurements run on."""
    if url is not None:
        yield url
        return
    proc, started = start_redis(core=0)
    try:
        yield started
    finally:
        procs.stop(proc)


def redis_command(port: int, command: str, size: int = 64) -> bytes:
    """One inline command; its reply's first line, or b"" if Redis is not there."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(command.encode() + b"\r\n")
            reply = conn.recv(size)
            return reply if size > 64 else reply.split(b"\r\n")[0]
    except OSError:
        return b""


def _ready(
    proc: subprocess.Popen[bytes] | None,
    port: int,
    headers: Mapping[str, str],
    started: float,
    timeout_s: float,
) -> float:
    chat = SCENARIOS["chat"]
    body = chat.make_body("ready")
    send = {**headers, "Content-Type": "application/json"}
    return procs.wait_ready(proc, port, chat.path, body, send, started=started, timeout_s=timeout_s)


def _launch(
    bench: Bench,
    name: str,
    cmd: list[str],
    port: int,
    headers: dict[str, str],
    cores: set[int] | None = None,
    **env: str,
) -> Running:
    started = time.monotonic()
    core = bench.server_core if cores is None else cores
    proc = procs.spawn([*bench.wrap, *cmd], core=core, env=env, log=bench.log_for(name))
    try:
        startup = _ready(proc, port, headers, started, bench.start_timeout_s)
    except RuntimeError as exc:
        procs.stop(proc)
        hint = "" if bench.server_logs else " (rerun with --server-logs to keep its output)"
        raise RuntimeError(f"{name}: {exc}{hint}") from exc
    return Running(name, f"http://127.0.0.1:{port}", headers, proc.pid, startup, proc)


def start_direct(bench: Bench) -> Running:
    headers = {"Authorization": f"Bearer {MOCK_KEY}"}
    return Running("direct", bench.mock_url, headers, bench.mock_pid, None)


def start_bare(bench: Bench) -> Running:
    port = procs.free_port()
    cmd = [sys.executable, str(HERE / "bare_proxy.py"), "--port", str(port)]
    cmd += ["--upstream", bench.mock_url]
    return _launch(bench, "bare", cmd, port, {"Authorization": f"Bearer {MOCK_KEY}"})


def litellm_installed() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def install_litellm(timeout_s: float = 1200.0) -> None:
    """Create loadtests/.venv-litellm and install `litellm[proxy]` into it from the index."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "litellm[proxy]"]
    subprocess.run(pip, check=True, timeout=timeout_s)


def litellm_config(mock_url: str) -> dict[str, Any]:
    """One deployment per model, pointed at the mock; a master key; no database."""
    params = {"api_base": mock_url + "/v1", "api_key": MOCK_KEY}
    models = ("gpt-4o-mini", "text-embedding-3-small")
    return {
        "model_list": [
            {"model_name": m, "litellm_params": {"model": f"openai/{m}", **params}} for m in models
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }


def start_litellm(bench: Bench) -> Running:
    if not litellm_installed():
        raise RuntimeError(f"litellm: {LITELLM_VENV} is not installed")
    config = bench.workdir / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(bench.mock_url), sort_keys=False))
    port = procs.free_port()
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    return _launch(
        bench,
        "litellm",
        cmd,
        port,
        headers,
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # offline: the bundled price map, no fetch
    )


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base`: mappings key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def spendgate_config(overlays: tuple[Path, ...], redis_url: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SPENDGATE_TEMPLATE.read_text())
    for path in overlays:
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    if redis_url is not None:
        config = merge(config, {"store": {"url": redis_url}})
    return config


def _local_store(bench: Bench, running: Running, data_dir: Path) -> Running:
    """Move the local store's server and its aggregator (the gateway's children, on the
    gateway's core by inheritance) to the generator's core, where --redis runs Redis and
    `spendgate aggregate`: the gateway keeps its core to itself in both layouts, and their CPU
    is reported as Redis's is."""
    lock = json.loads((data_dir / "lock").read_text())
    moved = (int(lock["server"]), *procs.descendants_running(running.pid, b"aggregate"))
    for pid in moved:
        os.sched_setaffinity(pid, {bench.store_core})
    running.store_pids = moved
    return running


def _aggregator(bench: Bench, config: Path, name: str) -> subprocess.Popen[bytes]:
    """`spendgate aggregate` on the store's core: the Redis layout's aggregator is a process of
    its own, so it is run (and its CPU counted) beside Redis, as in production."""
    cmd = [sys.executable, "-m", "gateway", "aggregate", "--config", str(config)]
    env = {"LOADTEST_UPSTREAM_URL": bench.mock_url + "/v1", **CHECKOUT}
    env["LOADTEST_SPENDGATE_KEY"] = SPENDGATE_KEY
    return procs.spawn(cmd, core=bench.store_core, env=env, log=bench.log_for(f"{name}-aggregate"))


def start_spendgate(
    bench: Bench, workers: int = 1, name: str | None = None, store: str | None = None
) -> Running:
    """One process on the server core; with `workers` > 1, `serve --workers N` on every core
    (the processes share Redis, so this needs --redis). `store`: a Redis URL, "memory://" or
    LOCAL_STORE; by default the run's layout (`bench.redis_url`)."""
    if store is None:
        store = bench.redis_url
    elif store == LOCAL_STORE:
        store = None  # spendgate's default
    name = name or ("spendgate" if workers == 1 else f"spendgate-w{workers}")
    if workers > 1 and store == "memory://":
        raise RuntimeError(f"{name}: several workers need a shared store: not --memory")
    config = bench.workdir / f"{name}.yaml"
    spec = spendgate_config(bench.overlays, store)
    data_dir = bench.workdir / f"{name}-store"
    spec["store"]["data_dir"] = str(data_dir)
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    # Every round starts from an empty store.
    if store is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    elif store.startswith("redis://"):
        redis_command(urlsplit(store).port or 6379, "FLUSHALL")
    elif store.startswith("redis+cluster://"):  # every node: each holds its own slots
        for node in urlsplit(store).netloc.split(","):
            redis_command(int(node.rsplit(":", 1)[1]), "FLUSHALL")
    port = procs.free_port()
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    running = _launch(
        bench,
        name,
        cmd,
        port,
        {"Authorization": f"Bearer {SPENDGATE_KEY}"},
        None if workers == 1 else set(range(os.cpu_count() or 1)),
        LOADTEST_UPSTREAM_URL=bench.mock_url + "/v1",
        LOADTEST_SPENDGATE_KEY=SPENDGATE_KEY,
        **CHECKOUT,
    )
    if store is None:
        return _local_store(bench, running, data_dir)
    if store.startswith(("redis://", "redis+cluster://")):
        running.aggregator = _aggregator(bench, config, name)
        running.store_pids = (running.aggregator.pid,)
    return running


def _start_on(layout: str) -> Callable[[Bench], Running]:
    def start(bench: Bench) -> Running:
        if layout == "local":
            return start_spendgate(bench, name="spendgate-local", store=LOCAL_STORE)
        if bench.redis_server_url is None:
            raise RuntimeError("spendgate-redis: no redis-server was started")
        return start_spendgate(bench, name="spendgate-redis", store=bench.redis_server_url)

    return start


STARTERS: dict[str, Callable[[Bench], Running]] = {
    "direct": start_direct,
    "bare": start_bare,
    "litellm": start_litellm,
    "spendgate": start_spendgate,
    "spendgate-w2": lambda bench: start_spendgate(bench, workers=2),
    "spendgate-local": _start_on("local"),
    "spendgate-redis": _start_on("redis"),
}
