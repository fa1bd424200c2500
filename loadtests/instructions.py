"""Instructions per request, counted by valgrind's callgrind: a figure that the machine's load,
its drift and the host's steal do not move, where req/s and CPU seconds move by tens of percent.

    .venv/bin/python loadtests/instructions.py [--targets bare,spendgate]
        [--scenarios chat,embeddings] [--connections 4] [--requests 300] [--warmup 300]
        [--overlay FILE] [--url redis://HOST:PORT/DB | --local]

Needs valgrind (`apt-get install valgrind`). Each target runs alone on core 1 under
`valgrind --tool=callgrind --instr-atstart=no`, which runs it at a few times below native speed
until counting starts; spendgate on the Redis layout (a redis-server of its own on core 0, or
`--url`, whose database is flushed, with `spendgate aggregate` beside it, not counted), or
with `--local` on the local store (its server and aggregator moved to core 0, as the harness
does; not counted). Per
scenario: `--warmup` requests, then callgrind counts the target's user-space instructions over
`--requests` more (`callgrind_control -z`, `-i on`, the requests, `-i off`, `-d`), sent by a
Python client on core 0 at `--connections` at once, every body different as wrk's are.

Where the gateway and the bare proxy are both CPU-bound (at 4 connections on the benchmark VM
they are), bare / spendgate is the throughput ratio the harness measures (docs/benchmarks.md).
What the counts leave out: system calls (the kernel's instructions) and the cost of cache misses
and branch mispredictions: an instruction is not a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import procs, targets
from loadtests.run import GENERATOR_CORE, SERVER_CORE
from loadtests.scenarios import SCENARIOS, Scenario

CALLGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no")
STARTERS = {"bare": targets.start_bare, "spendgate": targets.start_spendgate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/instructions.py", description=__doc__)
    p.add_argument("--targets", default="bare,spendgate", help=f"of {', '.join(STARTERS)}")
    p.add_argument("--scenarios", default="chat,embeddings", help="comma-separated")
    p.add_argument("--connections", type=int, default=4, help="requests in flight at once")
    p.add_argument("--requests", type=int, default=300, help="counted per scenario")
    p.add_argument("--warmup", type=int, default=300, help="sent before counting starts")
    p.add_argument("--overlay", action="append", default=[], help="YAML over the config")
    p.add_argument("--url", help="spendgate's Redis (default: a redis-server of its own)")
    p.add_argument(
        "--local",
        action="store_true",
        help="spendgate on the local store (its server and aggregator on core 0), not Redis",
    )
    args = p.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",") if s]
    if unknown := [n for n in names if n not in STARTERS]:
        p.error(f"unknown target(s) {', '.join(unknown)}: use {', '.join(STARTERS)}")
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)}: apt-get install valgrind", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores: one for the target, one for the client, mock and Redis")
        return 2
    os.sched_setaffinity(0, {GENERATOR_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="instructions-"))
    counts: dict[str, dict[str, float]] = {}
    mock, mock_url = targets.start_mock(GENERATOR_CORE, None)
    try:
        with nullcontext() if args.local else targets.redis_for(args.url) as redis_url:
            bench = targets.Bench(
                mock_url=mock_url,
                mock_pid=mock.pid,
                workdir=workdir,
                server_core=SERVER_CORE,
                store_core=GENERATOR_CORE,
                overlays=tuple(Path(o) for o in args.overlay),
                redis_url=redis_url,
                redis_server_url=redis_url,
                start_timeout_s=300.0,
                wrap=(*CALLGRIND, f"--callgrind-out-file={workdir}/callgrind.out.%p"),
            )
            for name in names:
                counts[name] = _count_target(bench, name, scenarios, args)
    finally:
        procs.stop(mock)
    print(table(counts, [s.name for s in scenarios], args.connections))
    print(f"\ncallgrind's files: {workdir}")
    return 0


def _count_target(
    bench: targets.Bench, name: str, scenarios: list[Scenario], args: argparse.Namespace
) -> dict[str, float]:
    running = STARTERS[name](bench)
    out = {}
    try:
        for scenario in scenarios:
            out[scenario.name] = count(running, scenario, args, bench.workdir)
            print(
                f"{name:10} {scenario.name:11} {out[scenario.name]:>12,.0f} instructions "
                "per request",
                flush=True,
            )
    finally:
        running.stop()
    return out


def count(
    running: targets.Running, scenario: Scenario, args: argparse.Namespace, workdir: Path
) -> float:
    """The target's instructions per request over `args.requests` of `scenario`."""
    pid = str(running.pid)
    asyncio.run(send(running, scenario, args.warmup, args.connections))
    _control("-z", pid)
    _control("-i", "on", pid)
    asyncio.run(send(running, scenario, args.requests, args.connections))
    _control("-i", "off", pid)
    before = set(workdir.glob(f"callgrind.out.{pid}.*"))
    _control("-d", scenario.name, pid)
    dumps = set(workdir.glob(f"callgrind.out.{pid}.*")) - before
    if len(dumps) != 1:
        raise RuntimeError(f"{running.name}: callgrind wrote {len(dumps)} dumps, not one")
    requests: int = args.requests
    return callgrind_totals(dumps.pop().read_text(errors="replace")) / requests


async def send(running: targets.Running, scenario: Scenario, n: int, connections: int) -> None:
    """`n` requests of `scenario`, `connections` at a time; every one must answer 200."""
    bodies = scenario.bodies()
    headers = {**running.headers, "Content-Type": "application/json"}
    left = n
    failed: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0 and not failed:
            left -= 1
            async with session.post(
                running.url + scenario.path, data=bodies(), headers=headers
            ) as response:
                await response.read()
                if response.status != 200:
                    failed.append(f"HTTP {response.status}")

    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    if failed:
        raise RuntimeError(f"{running.name} {scenario.name}: {failed[0]}")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


_TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def callgrind_totals(text: str) -> int:
    """The instructions a callgrind dump counted (its `totals:` line; `summary:` in older
    formats). A dump of a run with counting off says 0."""
    found = [int(m) for m in _TOTALS.findall(text)]
    if not found:
        raise ValueError("not a callgrind dump: no totals line")
    return max(found)


def table(counts: dict[str, dict[str, float]], scenarios: list[str], connections: int) -> str:
    """Markdown: instructions per request of each target, and bare / spendgate when both ran."""
    names = list(counts)
    ratio = "bare" in counts and "spendgate" in counts
    head = ["scenario", "conns", *names] + (["bare / spendgate"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scenarios:
        row = [s, str(connections)] + [f"{counts[n][s] / 1e6:.3f} M" for n in names]
        if ratio:
            row.append(f"{counts['bare'][s] / counts['spendgate'][s]:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
