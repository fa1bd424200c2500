"""What a config change costs the gateway per request, to within a percent: two spendgates,
one with each config, served side by side on the server core and loaded at the same time.

    .venv/bin/python loadtests/paired.py                       # governance: off vs on
    .venv/bin/python loadtests/paired.py --a no-cache.yaml --b ""   # any two overlay sets

Each of `--restarts` pairs of fresh gateways (Redis layout, start order alternating: a process's
memory layout moves its cost by about 2 %, and the one started first ran slower) is warmed up,
then loaded at chat@`--connections` each, both at once, for `--cells` cells; a cell's figure is
B's CPU time per request over A's. Whatever the machine does during a cell (its speed drifted by
a fifth within an hour on the benchmark VM) it does to both, so cells of one pair agree to a few
tenths of a percent where req/s of separate runs differ by ten. Prints each pair and the
geometric mean of the pairs: B's extra CPU per request and the throughput it costs at that rate.

Two gateways on one core evict each other's caches, so both run slower than one alone and a
change that touches more memory per request looks dearer here than in `run.py`; this is a
strict, precise comparison, the harness's req/s the plain one (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import generators, targets
from loadtests.run import GENERATOR_CORE, SERVER_CORE
from loadtests.scenarios import SCENARIOS, Scenario

OVERLAYS = Path(__file__).parent / "config" / "overlays"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/paired.py", description=__doc__)
    p.add_argument("--a", default="no-rate-limits.yaml", help="A's overlays, '+'-separated")
    p.add_argument("--b", default="policies.yaml", help="B's overlays ('': the template)")
    p.add_argument("--restarts", type=int, default=6, help="pairs of fresh gateways")
    p.add_argument("--cells", type=int, default=3, help="cells per pair")
    p.add_argument("--duration", type=int, default=6, help="seconds per cell")
    p.add_argument("--connections", type=int, default=16, help="per gateway")
    p.add_argument("--scenario", default="chat", choices=sorted(SCENARIOS))
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores: one for the gateways, one for the generator, mock and Redis")
        return 2
    os.sched_setaffinity(0, {GENERATOR_CORE})
    scenario = SCENARIOS[args.scenario]
    workdir = Path(tempfile.mkdtemp(prefix="paired-"))
    mock, mock_url = targets.start_mock(GENERATOR_CORE, None)
    redis, redis_url = targets.start_redis(GENERATOR_CORE)
    pairs: list[float] = []
    try:
        for k in range(args.restarts):
            order = ("a", "b") if k % 2 == 0 else ("b", "a")
            running: dict[str, targets.Running] = {}
            try:
                for side in order:
                    bench = targets.Bench(
                        mock_url=mock_url,
                        mock_pid=mock.pid,
                        workdir=workdir / f"{k}-{side}",
                        server_core=SERVER_CORE,
                        store_core=GENERATOR_CORE,
                        overlays=_overlays(getattr(args, side)),
                        redis_url=redis_url,
                        redis_server_url=redis_url,
                    )
                    bench.workdir.mkdir(parents=True)
                    running[side] = targets.start_spendgate(bench)
                for r in running.values():
                    generators.run_probe(r.url, scenario, 300, r.headers, budget_s=5)
                    generators.run_load(r.url, scenario, args.connections, 2, r.headers)
                cells = [_cell(running, scenario, args) for _ in range(args.cells)]
            finally:
                for r in running.values():
                    r.stop()
            pairs.append(statistics.geometric_mean(r for r, _ in cells))
            us = cells[-1][1]
            print(
                f"pair {k + 1} ({order[0].upper()} started first): A {us['a']:.1f} us, "
                f"B {us['b']:.1f} us per request in its last cell; B/A "
                + ", ".join(f"{r:.4f}" for r, _ in cells),
                flush=True,
            )
    finally:
        mock.terminate()
        redis.terminate()
    ratio = statistics.geometric_mean(pairs)
    print(
        f"B/A CPU per request: {ratio:.4f} (pairs {', '.join(f'{r:.3f}' for r in pairs)}): "
        f"B costs {100 * (ratio - 1):.1f} % more CPU per request, {100 * (1 - 1 / ratio):.1f} % "
        "of the throughput at that rate"
    )
    return 0


def _overlays(spec: str) -> tuple[Path, ...]:
    return tuple(OVERLAYS / name for name in spec.split("+") if name)


def _cell(
    running: dict[str, targets.Running], scenario: Scenario, args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """Both loaded at once; B's CPU per request over A's, and each's in microseconds."""
    loads: dict[str, generators.Load] = {}
    before = {side: _cpu_s(r.pid) for side, r in running.items()}

    def load(side: str) -> None:
        r = running[side]
        loads[side] = generators.run_load(
            r.url, scenario, args.connections, args.duration, r.headers
        )

    threads = [threading.Thread(target=load, args=(side,)) for side in running]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    us = {
        side: (_cpu_s(r.pid) - before[side]) / max(1, loads[side].requests) * 1e6
        for side, r in running.items()
    }
    return us["b"] / us["a"], us


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main())
