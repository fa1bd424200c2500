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
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.budgets.ledger import BudgetLedger
from gateway.config.model import BudgetConfig
from gateway.store.connect import close_store, open_store
from gateway.types import Principal, SpendEvent
from loadtests.targets import redis_for

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--budgets", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--url", help="an existing Redis (its db is flushed), or memory://")
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    args = parser.parse_args()
    with redis_for(args.url) as url:
        if args.no_uvloop:
            asyncio.run(run(url, args.iterations, args.budgets))
        else:
            import uvloop

            uvloop.run(run(url, args.iterations, args.budgets))


if __name__ == "__main__":
    main()
