"""The response cache's Redis level under embeddings the size of real ones.

    .venv/bin/python loadtests/cache_bound.py [--seconds 20] [--rounds 2] [--connections 4]
        [--overlay FILE]

Every request asks the mock for 1,536 dimensions (~25 KB an answer) with a body never sent
before, so every one is a miss the cache stores in the store's Redis level. This runs spendgate
on the local store and on a redis-server (no persistence) as the harness does (the gateway on
core 1; the mock, wrk and the store on core 0), one load per layout and round, and prints what
the level grew to: the store's `used_memory`, the local store's append-only file, and
`sg_cache_redis_evictions_total`. With the bound (`cache.redis_max_bytes`, 256 MiB by default)
the store's memory levels off at the bound plus the store's overhead; without one it grows by
the answers' bytes until their TTL.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from gateway.store.server import socket_path
from loadtests import procs, targets
from loadtests.generators import run_load
from loadtests.run import GENERATOR_CORE, SERVER_CORE
from loadtests.scenarios import LARGE_EMBEDDINGS

MB = 1000 * 1000
LAYOUTS = ("spendgate-local", "spendgate-redis")
_EVICTIONS = re.compile(r"^sg_cache_redis_evictions_total\s+(\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Cell:
    layout: str
    requests: int
    req_per_s: float
    used_memory: int  # the store's, after the load
    aof_bytes: int  # the local store's append-only file; 0 on Redis (no persistence)
    evictions: int


def evictions(metrics_text: str) -> int:
    """`sg_cache_redis_evictions_total` in a /metrics page (0 before the first)."""
    found = _EVICTIONS.search(metrics_text)
    return int(float(found.group(1))) if found else 0


def table(cells: list[Cell]) -> str:
    lines = [
        "| store | requests | req/s | store used_memory MB | append-only file MB | evicted |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        aof = f"{c.aof_bytes / MB:.1f}" if c.layout.endswith("local") else "-"
        row = [c.layout, f"{c.requests:,}", f"{c.req_per_s:,.0f}", f"{c.used_memory / MB:.1f}"]
        lines.append("| " + " | ".join([*row, aof, f"{c.evictions:,}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/cache_bound.py", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0, help="per load")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--overlay", action="append", default=[], help="YAML over the config")
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores: one for the gateway, one for the mock, the store and wrk")
        return 2
    os.sched_setaffinity(0, {GENERATOR_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="cache-bound-"))
    mock, mock_url = targets.start_mock(GENERATOR_CORE, None)
    cells: list[Cell] = []
    try:
        with targets.redis_for(None) as redis_url:
            bench = targets.Bench(
                mock_url=mock_url,
                mock_pid=mock.pid,
                workdir=workdir,
                server_core=SERVER_CORE,
                overlays=tuple(Path(o) for o in args.overlay),
                redis_server_url=redis_url,
            )
            for round_ in range(args.rounds):
                for layout in LAYOUTS:
                    cells.append(_cell(bench, layout, args))
                    row = table(cells[-1:]).splitlines()[-1]
                    print(f"[round {round_ + 1}/{args.rounds}] {row}", flush=True)
    finally:
        procs.stop(mock)
    print(table(cells))
    return 0


def _cell(bench: targets.Bench, layout: str, args: argparse.Namespace) -> Cell:
    running = targets.STARTERS[layout](bench)
    try:
        load = run_load(
            running.url, LARGE_EMBEDDINGS, args.connections, args.seconds, running.headers
        )
        if load.errors:
            raise RuntimeError(f"{layout}: {load.errors} failed ({load.error_detail})")
        with urllib.request.urlopen(running.url + "/metrics", timeout=10) as response:
            evicted = evictions(response.read().decode())
        data_dir = bench.workdir / f"{layout}-store"
        if layout.endswith("local"):
            store = redis.Redis(unix_socket_path=str(socket_path(data_dir.absolute())))
            aof = sum(f.stat().st_size for f in data_dir.rglob("*.aof"))
        else:
            assert bench.redis_server_url is not None
            store, aof = redis.Redis.from_url(bench.redis_server_url), 0
        with store:
            used = int(store.info("memory")["used_memory"])
        return Cell(layout, load.requests, load.rps, used, aof, evicted)
    finally:
        running.stop()


if __name__ == "__main__":
    raise SystemExit(main())
