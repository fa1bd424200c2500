"""A real Redis Cluster for tests: 3 primaries and 3 replicas, `redis-server --cluster-enabled
yes` on free ports in a temporary directory, joined by `redis-cli --cluster create`. The tests
that fail a primary over use one of their own (`LocalCluster`); the rest share the session's
(`real_cluster_url` in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

_NODES = 6


def _free_port() -> int:
    """A port that is free, and so is its cluster bus port (+10000); a node's port must be at
    most 55535 for that."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port


def binaries() -> tuple[str, str] | None:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return None if server is None or cli is None else (server, cli)


@dataclass
class LocalCluster:
    directory: Path
    node_timeout_ms: int = 5000
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The store URL: two of the nodes to find it by (the rest is learnt)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def start(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("redis-server / redis-cli not on PATH")
        server, cli = found
        while len(self.ports) < _NODES:
            port = _free_port()
            if self._start_node(server, port):  # else someone took the port meanwhile
                self.ports.append(port)
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self._wait_until_ok()

    def _start_node(self, server: str, port: int) -> bool:
        workdir = self.directory / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
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
        deadline = time.monotonic() + 10
        while _info(port, "PING") is None:
            if self.procs[port].poll() is not None:
                del self.procs[port]
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster node on port {port} did not start")
            time.sleep(0.02)
        return True

    def _wait_until_ok(self) -> None:
        """Every node sees the cluster as ok, every replica is in sync with its primary."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [p for p in self.ports if self.procs[p].poll() is None]
            infos = [_info(p, "CLUSTER", "INFO") or {} for p in live]
            replication = [_info(p, "INFO", "replication") or {} for p in live]
            if all(i.get("cluster_state") == "ok" for i in infos) and all(
                r.get("role") == "master" or r.get("master_link_status") == "up"
                for r in replication
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("the test cluster did not become ok within 30 s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)

    async def primaries(self) -> list[int]:
        return [p for p in self.ports if await self._role(p) == "master"]

    async def replica_of(self, primary: int) -> int:
        for port in self.ports:
            if self.procs[port].poll() is None:
                info = await _async_info(port, "INFO", "replication")
                if info.get("master_port") == primary:
                    return port
        raise LookupError(f"no replica of {primary}")

    async def _role(self, port: int) -> str:
        if self.procs[port].poll() is not None:
            return "dead"
        return str((await _async_info(port, "INFO", "replication")).get("role"))

    async def kill_in_sync(self, primary: int, hold_s: float = 0.0) -> int:
        """Stop `primary` taking writes, wait until its replica has all it acknowledged, then
        SIGKILL it: the crash a replica takes over from with nothing acknowledged lost (Redis
        replicates asynchronously, so a crash may otherwise lose its last writes). Returns the
        replica's port. `hold_s`: how long writes queue on it before (commands in flight)."""
        replica = await self.replica_of(primary)
        client = Redis(port=primary)
        try:
            await client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
            await asyncio.sleep(hold_s)
            info = await _async_info(primary, "INFO", "replication")
            offset = int(info["master_repl_offset"])
            async with asyncio.timeout(10):
                while True:
                    info = await _async_info(replica, "INFO", "replication")
                    if int(info.get("slave_repl_offset", -1)) >= offset:
                        break
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        self.procs[primary].kill()
        self.procs[primary].wait(timeout=10)
        return replica

    async def wait_promoted(self, replica: int, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                live = [p for p in self.ports if self.procs[p].poll() is None]
                infos = [await _async_info(p, "CLUSTER", "INFO") for p in live]
                if await self._role(replica) == "master" and all(
                    i.get("cluster_state") == "ok" for i in infos
                ):
                    return
                await asyncio.sleep(0.05)


def _info(port: int, *command: str) -> dict[str, Any] | None:
    """A node's parsed INFO / CLUSTER INFO (PING: {}), or None if it does not answer."""
    client = SyncRedis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        reply = client.execute_command(*command)
    except RedisError:
        return None
    finally:
        client.close()
    return _parsed(reply)


def _parsed(reply: object) -> dict[str, Any]:
    """INFO comes parsed by redis-py; CLUSTER INFO as its text of `name:value` lines."""
    if isinstance(reply, dict):
        return reply
    if isinstance(reply, bytes):
        lines = reply.decode().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)
    return {}


async def _async_info(port: int, *command: str) -> dict[str, Any]:
    client = Redis(port=port)
    try:
        reply = await client.execute_command(*command)
    finally:
        await client.aclose()
    return _parsed(reply)
