"""What the policies stage costs: chat at 32 connections against spendgate without and with a
realistic policy set (`config/overlays/policies.yaml`: every policy evaluated on every request,
none acting), in ABBA order so the machine's drift hits both alike.

    .venv/bin/python loadtests/policies_cost.py [--rounds 8] [--duration 10] [--connections 32]
    .venv/bin/python loadtests/policies_cost.py --micro 200000

Each cell starts a fresh spendgate (local store, as `run.py` runs it) on the server core, warms
it up, and runs the load with the mock and the generator on the other core. Prints each cell,
then the medians: requests per second and requests per CPU-second of the server, off and on,
and the change. Writes the cells to loadtests/results/policies-cost-<time>.json.

`--micro N` times the policies stage alone instead, in this process: N checks of the load
test's chat request by its key against the same policy set, in CPU microseconds per request
(minus the same loop with no policies). On a busy machine, where req/s swing by a fifth
between cells, this is the figure that resolves a few percent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import generators, procs, targets
from loadtests.run import GENERATOR_CORE, RESULTS, SERVER_CORE
from loadtests.scenarios import SCENARIOS

OVERLAY = Path(__file__).parent / "config" / "overlays" / "policies.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/policies_cost.py", description=__doc__)
    p.add_argument("--rounds", type=int, default=8, help="ABBA rounds (each: off and on)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--micro", type=int, metavar="N", help="time N stage calls in-process")
    args = p.parse_args(argv)
    if args.micro:
        print(json.dumps(micro(args.micro), indent=1))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="policies-cost-"))
    mock_proc, mock_url = targets.start_mock(GENERATOR_CORE, None)
    benches = {
        mode: targets.Bench(
            mock_url=mock_url,
            mock_pid=mock_proc.pid,
            workdir=workdir / mode,
            server_core=SERVER_CORE,
            store_core=GENERATOR_CORE,
            overlays=(OVERLAY,) if mode == "on" else (),
        )
        for mode in ("off", "on")
    }
    for bench in benches.values():
        bench.workdir.mkdir(parents=True)
    cells: list[dict[str, object]] = []
    try:
        for i in range(args.rounds):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                cells.append(cell(benches[mode], mode, i + 1, args, mock_proc.pid))
    finally:
        procs.stop(mock_proc)
    summary = summarize(cells)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"policies-cost-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "cells": cells, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"cells in {out}", file=sys.stderr)
    return 0


def cell(
    bench: targets.Bench, mode: str, round_no: int, args: argparse.Namespace, mock_pid: int
) -> dict[str, object]:
    running = targets.start_spendgate(bench)
    try:
        generators.run_probe(running.url, SCENARIOS["chat"], 300, running.headers, budget_s=10)
        meter = procs.CellMeter(
            running.pid, SERVER_CORE, mock_pid, GENERATOR_CORE, running.store_pids
        )
        meter.start()
        load = generators.run_load(
            running.url, SCENARIOS["chat"], args.connections, args.duration, running.headers
        )
        cpu = meter.read()
    finally:
        running.stop()
    per_cpu = load.rps / (cpu["server_cpu_pct"] / 100) if cpu["server_cpu_pct"] else 0.0
    row = {
        "round": round_no,
        "policies": mode,
        "rps": load.rps,
        "errors": load.errors,
        "p50_ms": load.p50_us / 1e3,
        "p99_ms": load.p99_us / 1e3,
        "server_cpu_pct": cpu["server_cpu_pct"],
        "requests_per_cpu_s": per_cpu,
        "other_cpu_pct": cpu["other_cpu_pct"],
    }
    print(
        f"round {round_no} policies {mode:3}: {load.rps:8,.0f} req/s  {per_cpu:8,.0f} req/CPU-s  "
        f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  other {cpu['other_cpu_pct']:.0f}%"
        + (f"  ERRORS {load.errors}" if load.errors else ""),
        file=sys.stderr,
        flush=True,
    )
    return row


def micro(n: int) -> dict[str, float]:
    """CPU microseconds the policies stage adds to one passing chat request."""
    import asyncio
    import os
    import time
    from dataclasses import replace
    from types import MappingProxyType

    import orjson
    import yaml

    from gateway.accounting import Record
    from gateway.config.loader import load_text
    from gateway.config.policies import PoliciesConfig
    from gateway.metrics import Metrics
    from gateway.plan import Plan, with_token_cap
    from gateway.policies.approvals import ApprovalStore
    from gateway.policies.enforce import PolicyEnforcer
    from gateway.pricing.tokens import cheap_upper_bound
    from gateway.store.connect import open_store
    from gateway.types import Principal

    os.environ.setdefault("LOADTEST_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    os.environ.setdefault("LOADTEST_SPENDGATE_KEY", "sk-sg-loadtest-micro-000000000001")
    spec = targets.spendgate_config((OVERLAY,), None)
    spec["store"]["url"] = "memory://"
    config = load_text(yaml.safe_dump(spec), "<policies micro>")
    raw = SCENARIOS["chat"].make_body("1")
    body = orjson.loads(raw)
    route = config.models["gpt-4o-mini"]
    principal = Principal(
        "key_000000000001", "search", "ranking", "prod", "rerank",
        MappingProxyType({"cost_center": "cc-1001"}),
    )  # fmt: skip

    async def timed(enforcer: PolicyEnforcer, cfg: object) -> float:
        started = time.process_time()
        for i in range(n):
            record = Record(f"r{i}", "chat/completions", 0.0, principal=principal)
            record.model = "gpt-4o-mini"
            capped = with_token_cap("chat/completions", body, 4096)
            bound = cheap_upper_bound(len(raw))
            plan = Plan(capped, route, route.deployments[0].price, None, bound)
            _, over = enforcer.judge(cfg, record, plan)  # type: ignore[arg-type]
            assert not over  # the load test's requests pass every policy
        return (time.process_time() - started) / n * 1e6

    async def run() -> dict[str, float]:
        redis = await open_store("memory://")
        enforcer = PolicyEnforcer(ApprovalStore(redis), Metrics())
        bare = replace(config, policies=PoliciesConfig())
        results: dict[str, list[float]] = {"none_us": [], "policies_us": []}
        for _ in range(3):
            results["none_us"].append(await timed(enforcer, bare))
            results["policies_us"].append(await timed(enforcer, config))
        none, with_policies = min(results["none_us"]), min(results["policies_us"])
        return {
            "requests": n,
            "loop_without_policies_us": round(none, 3),
            "loop_with_policies_us": round(with_policies, 3),
            "stage_us_per_request": round(with_policies - none, 3),
        }

    return asyncio.run(run())


def summarize(cells: list[dict[str, object]]) -> dict[str, object]:
    def median(mode: str, key: str) -> float:
        return statistics.median(float(c[key]) for c in cells if c["policies"] == mode)  # type: ignore[arg-type]

    summary: dict[str, object] = {}
    for key in ("rps", "requests_per_cpu_s", "p50_ms", "p99_ms"):
        off, on = median("off", key), median("on", key)
        change = round(100 * (on / off - 1), 2) if off else None
        summary[key] = {"off": round(off, 2), "on": round(on, 2), "change_pct": change}
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
