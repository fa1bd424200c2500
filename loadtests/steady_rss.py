"""Resident memory at steady load: the gateway's RSS once its response cache is full.

    .venv/bin/python loadtests/steady_rss.py [--seconds 10] [--connections 32]
        [--max-rounds 12] [--overlay FILE] [--redis]

The harness (run.py) reads RSS after its cells, a few seconds each, when the in-process level of
the response cache may still be filling. This runs spendgate as the harness does (its config,
the local store unless --redis, on core 1; the mock and wrk on core 0), then one load of each
scenario, then embeddings again (every body different, so every request is a miss the cache
keeps) until the cache's memory level is full (`sg_cache_memory_bytes` within 5 % of
`cache.memory_max_bytes`) and RSS grew by less than 1 MB over the last round: what a gateway
that has served traffic for a while holds. It prints RSS and the cache level after each load.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.model import CacheConfig
from loadtests import procs, targets
from loadtests.generators import run_load
from loadtests.run import GENERATOR_CORE, SERVER_CORE
from loadtests.scenarios import SCENARIOS

MB = 1024 * 1024
_GAUGE = re.compile(r"^sg_cache_memory_bytes\s+(\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Reading:
    after: str  # the load just finished ("start" before any)
    requests: int
    rss_bytes: int
    cache_bytes: int


def steady(readings: list[Reading], bound: int, slack_bytes: int = MB) -> bool:
    """Whether the last reading is steady: the cache level within 5 % of its bound, and RSS
    larger than the reading before by less than `slack_bytes`."""
    if len(readings) < 2 or bound <= 0:
        return False
    last, before = readings[-1], readings[-2]
    return last.cache_bytes >= 0.95 * bound and last.rss_bytes - before.rss_bytes < slack_bytes


def table(readings: list[Reading]) -> str:
    lines = ["| after | requests | RSS MB | cache level MB |", "|---|---|---|---|"]
    for r in readings:
        row = [r.after, f"{r.requests:,}", f"{r.rss_bytes / MB:.1f}", f"{r.cache_bytes / MB:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cache_bytes(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        found = _GAUGE.search(response.read().decode())
    return int(float(found.group(1))) if found else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/steady_rss.py", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="per load")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--max-rounds", type=int, default=12, help="embeddings loads at most")
    p.add_argument("--overlay", action="append", default=[], help="YAML over the config")
    p.add_argument("--redis", action="store_true", help="a redis-server as the store")
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores: one for the gateway, one for the mock and the load generator")
        return 2
    os.sched_setaffinity(0, {GENERATOR_CORE})
    overlays = tuple(Path(o) for o in args.overlay)
    cache = targets.spendgate_config(overlays).get("cache") or {}
    bound = int(cache.get("memory_max_bytes", CacheConfig().memory_max_bytes))
    workdir = Path(tempfile.mkdtemp(prefix="steady-rss-"))
    mock, mock_url = targets.start_mock(GENERATOR_CORE, None)
    readings: list[Reading] = []
    try:
        with targets.redis_for(None) if args.redis else nullcontext() as redis_url:
            bench = targets.Bench(
                mock_url=mock_url,
                mock_pid=mock.pid,
                workdir=workdir,
                server_core=SERVER_CORE,
                overlays=overlays,
                redis_url=redis_url,
                redis_server_url=redis_url,
            )
            running = targets.start_spendgate(bench)
            try:
                readings = _load(running, args, bound)
            finally:
                running.stop()
    finally:
        procs.stop(mock)
    print(table(readings))
    done = steady(readings, bound)
    print(f"\ncache.memory_max_bytes {bound / MB:.1f} MB; " + ("steady" if done else "NOT steady"))
    return 0 if done else 1


def _load(running: targets.Running, args: argparse.Namespace, bound: int) -> list[Reading]:
    def read(after: str, requests: int) -> Reading:
        rss = procs.rss_bytes(running.pid, running.store_pids)
        reading = Reading(after, requests, rss, cache_bytes(running.url))
        print(f"  {after:12} {requests:>8,} requests  RSS {rss / MB:6.1f} MB", flush=True)
        return reading

    readings = [read("start", 0)]
    plan = ["chat", "stream", "cache_hit"] + ["embeddings"] * args.max_rounds
    for name in plan:
        scenario = SCENARIOS[name]
        load = run_load(running.url, scenario, args.connections, args.seconds, running.headers)
        if load.errors:
            raise RuntimeError(f"{name}: {load.errors} failed ({load.error_detail})")
        readings.append(read(name, load.requests))
        if name == "embeddings" and steady(readings, bound):
            break
    return readings


if __name__ == "__main__":
    raise SystemExit(main())
