"""Latency of the budget hot path: reserve + settle, one client, sequential, on loopback Redis.

    .venv/bin/python loadtests/budgets_latency.py [--iterations 5000] [--budgets 3]
        [--url redis://127.0.0.1:6379/9] [--no-uvloop]

Without --url it starts its own redis-server on a free port (no persistence). It FLUSHDBs the
database it uses. Reports p50 / p99 / max in microseconds for reserve, settle and the pair,
measured around the awaited calls (client encoding + round trip + script run + decoding).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.budgets.ledger import BudgetLedger
from gateway.config.model import BudgetConfig
from gateway.store.connect import close_store, open_store
from gateway.types import Principal, SpendEvent

TEAM = "bench"
PRINCIPAL = Principal(key_id="key_0123456789ab", team=TEAM, project="search")


def budgets(n: int) -> list[BudgetConfig]:
    """The realistic case: a team, a project and a key budget apply to one request."""
    shapes = [
        ("team-monthly", "team", None, "monthly"),
        ("project-daily", "project", "search", "daily"),
        ("key-weekly", "key", "key_0123456789ab", "weekly"),
    ]
    return [
        BudgetConfig(name, TEAM, scope, match, period, limit_nano=10**15, limit_tokens=10**12)  # type: ignore[arg-type]
        for name, scope, match, period in shapes[:n]
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, iterations: int, n_budgets: int) -> None:
    redis = await open_store(url)
    try:
        await redis.flushdb()
        ledger = BudgetLedger(redis)
        rules = budgets(n_budgets)
        reserve_us: list[float] = []
        settle_us: list[float] = []
        warmup = min(500, iterations // 10)
        for i in range(warmup + iterations):
            request_id = f"req-{i}"
            t0 = time.perf_counter_ns()
            res = await ledger.reserve(TEAM, request_id, rules, 2_000_000, 1500, 900.0)
            t1 = time.perf_counter_ns()
            event = SpendEvent(
                event_id=f"ev-{i}",
                ts_ms=int(time.time() * 1000),
                team=TEAM,
                request_id=request_id,
                key_id=PRINCIPAL.key_id,
                project=PRINCIPAL.project,
                requested_model="gpt-4o-mini",
                served_model="gpt-4o-mini",
                provider="openai",
                deployment="openai/gpt-4o-mini",
                prompt_tokens=1000,
                completion_tokens=200,
                cost_nano=1_234_567,
                list_cost_nano=1_234_567,
                latency_ms=412.5,
            )
            t2 = time.perf_counter_ns()
            await ledger.settle(res, TEAM, request_id, rules, event)
            t3 = time.perf_counter_ns()
            if i >= warmup:
                reserve_us.append((t1 - t0) / 1000)
                settle_us.append((t3 - t2) / 1000)
        both = [a + b for a, b in zip(reserve_us, settle_us, strict=True)]
        print(f"{n_budgets} budget(s), {iterations} iterations, {url.split('://')[0]}://")
        for label, values in (("reserve", reserve_us), ("settle", settle_us), ("both", both)):
            print(
                f"  {label:8s} p50 {pct(values, 0.50):7.1f} us   p99 {pct(values, 0.99):7.1f} us"
                f"   mean {statistics.fmean(values):7.1f} us   max {max(values):8.1f} us"
            )
        await redis.flushdb()
    finally:
        await close_store(redis)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it or pass --url")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sg-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    sys.exit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--budgets", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--url", help="an existing Redis (its db is flushed), or memory://")
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_redis()
    try:
        if args.no_uvloop:
            asyncio.run(run(url, args.iterations, args.budgets))
        else:
            import uvloop

            uvloop.run(run(url, args.iterations, args.budgets))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
