"""A real `spendgate serve` process on the local store (store.url: local://, the default), for
the tests that stop it the ways production does: SIGTERM (a rolling deploy) and SIGKILL (a
crash), and kill its store's server. Its store is read afterwards through `gateway.store`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.store.connect import close_store, open_store
from gateway.store.server import local_store
from gateway.types import SpendEvent
from tests.conftest import ADMIN_KEY

TEAM = "alpha"
BUDGET = "alpha-total"  # a `total` budget: the real clock's date never matters

CONFIG = """\
server:
  admin_key: ${SPENDGATE_ADMIN_KEY}
  drain_s: %(drain_s)s
store:
  data_dir: %(data_dir)s
  spool_dir: %(spool_dir)s
providers:
  mock:
    kind: openai
    base_url: ${SPENDGATE_UPSTREAM_URL}
    api_key: upstream-secret-key-123456789
    timeouts: {connect_s: 1, first_byte_s: 5, total_s: 60}
models:
  gpt-4o:
    deployments:
      - {provider: mock, model: gpt-4o}
teams:
  alpha:
    budgets:
      - {name: alpha-total, period: total, limit_usd: 1000}
  beta: {}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """One `spendgate serve` (no store URL in its config: the local store) and its log."""

    directory: Path
    upstream_url: str
    drain_s: float = 30.0
    port: int = field(default_factory=free_port)
    store_dir: Path | None = None  # default: <directory>/store
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.store_dir or self.directory / "store"

    @property
    def log_path(self) -> Path:
        return self.directory / f"serve-{self.starts}.log"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "gateway.yaml"
        config.write_text(
            CONFIG
            % {
                "drain_s": self.drain_s,
                "data_dir": self.data_dir,
                "spool_dir": self.directory / "spool",
            }
        )
        env = {
            **os.environ,
            "SPENDGATE_UPSTREAM_URL": self.upstream_url,
            "SPENDGATE_ADMIN_KEY": ADMIN_KEY,
        }
        env.pop("SPENDGATE_STORE_URL", None)
        self.starts += 1
        with self.log_path.open("wb") as log:
            argv = ["serve", "--config", str(config), "--port", str(self.port)]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", *argv],
                env=env,
                stdout=log,
                stderr=log,
            )
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                assert self.process.poll() is None, self.log_path.read_text()[-3000:]
                try:
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def exit_code(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            while self.process.poll() is None:
                await asyncio.sleep(0.05)
        return self.process.returncode

    async def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return await self.exit_code()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text()

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def new_key(self, team: str = TEAM, name: str | None = None) -> str:
        status, body = await self.admin("POST", "/admin/keys", {"team": team, "name": name})
        assert status == 201, body
        return str(body["key"])


@asynccontextmanager
async def store_of(served: Served) -> AsyncIterator[Redis]:
    """A client of the gateway's local store: its running server, or one started to read it."""
    async with local_store(served.data_dir) as url:
        redis = await open_store(url)
        try:
            yield redis
        finally:
            await close_store(redis)


async def ledger(redis: Redis, team: str = TEAM) -> list[SpendEvent]:
    entries = await redis.xrange(rediskeys.events_stream(team))
    return [SpendEvent.from_fields(fields) for _, fields in entries]


async def budget_counter(redis: Redis, team: str = TEAM, budget: str = BUDGET) -> dict[str, int]:
    raw = await redis.hgetall(rediskeys.budget_counter(team, budget, "total"))
    return {k.decode(): int(v) for k, v in raw.items()}
