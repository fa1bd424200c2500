"""The one command: `python loadtests/run.py [--quick] [--duration S] [--rounds N] [--targets ...]`.

Starts the mock on the generator's core, then for each round starts each target alone on the
server core (timing spawn -> first 200), loads it scenario by scenario, measures one-client
latency and streaming time to first byte, reads its RSS, and stops it; rounds interleave targets
(A, B, C, A, B, C) so drift cancels. Writes the JSON under loadtests/results/ and prints tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# `python loadtests/run.py` puts loadtests/ itself first on sys.path; the harness modules import
# one another as the `loadtests` package, so the repository root must be there too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import generators, procs, report, targets
from loadtests.scenarios import SCENARIOS

RESULTS = Path(__file__).parent / "results"
GENERATOR_CORE, SERVER_CORE = 0, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python loadtests/run.py", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke: 1 round, 1 s cells, short probes")
    p.add_argument("--duration", type=float, help="seconds per load cell (default 10; quick 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument("--targets", default=",".join(targets.NAMES), help="comma-separated")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    p.add_argument("--connections", default="4,32", help="comma-separated connection counts")
    p.add_argument("--probe-requests", type=int, help="streaming TTFB probe size (default 2000)")
    p.add_argument(
        "--overlay",
        action="append",
        type=Path,
        default=[],
        help="YAML merged over loadtests/config/spendgate.yaml (repeatable)",
    )
    layout = p.add_mutually_exclusive_group()
    layout.add_argument(
        "--redis",
        action="store_true",
        help="spendgate's store in a redis-server on the generator's core (default: the local "
        "store, local://, its server moved to the generator's core)",
    )
    layout.add_argument(
        "--cluster",
        action="store_true",
        help="spendgate's store in a Redis Cluster of 3 primaries on the generator's core",
    )
    layout.add_argument(
        "--memory",
        action="store_true",
        help="spendgate's store in-process (memory://), the embedded layout before local://",
    )
    p.add_argument("--profile", action="store_true", help="py-spy spendgate under chat load")
    p.add_argument("--server-logs", action="store_true", help="keep server output in the run dir")
    p.add_argument("--no-install", action="store_true", help="skip LiteLLM if its venv is missing")
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each cell, wait up to this many seconds for other work to leave the cores "
        "(default 30; quick 0: no check)",
    )
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=10.0,
        help="a cell during which other work used more than this %% of a core is disturbed",
    )
    p.add_argument(
        "--max-steal",
        type=float,
        default=2.0,
        help="a cell during which the host stole more than this %% of a core's time is disturbed",
    )
    p.add_argument(
        "--retries", type=int, help="times a disturbed cell is run again (default 3; quick 0)"
    )
    p.add_argument("--out", type=Path, help="results JSON (default loadtests/results/<time>.json)")
    args = p.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.probe_requests = args.probe_requests or (200 if args.quick else 2000)
    if args.retries is None:
        args.retries = 0 if args.quick else 3
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0
    args.targets = _names(args.targets, targets.NAMES + targets.EXTRA_NAMES, p)
    args.scenarios = _names(args.scenarios, tuple(SCENARIOS), p)
    args.connections = [int(c) for c in args.connections.split(",")]
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")  # every "added" figure subtracts it
    return args


def _names(text: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {unknown}; choose from {', '.join(known)}")
    return names


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_target(
    running: targets.Running,
    args: argparse.Namespace,
    mock_pid: int,
    round_no: int,
    redis_pids: tuple[int, ...] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every load cell, the one-connection chat run and the streaming probe for one target."""
    loads: list[dict[str, Any]] = []
    store_pids = running.store_pids + redis_pids
    meter = procs.CellMeter(running.pid, SERVER_CORE, mock_pid, GENERATOR_CORE, store_pids)
    warm = generators.run_probe(
        running.url, SCENARIOS["chat"], 200, running.headers, budget_s=args.duration * 2
    )
    if warm.errors:
        log(f"  warm-up: {warm.errors} errors")
    cells = [(s, c) for s in args.scenarios for c in args.connections]
    if "chat" in args.scenarios:
        cells.append(("chat", 1))  # one client at a time: the added-latency figure
    for name, connections in cells:
        for attempt in range(1, args.retries + 2):
            waited = procs.wait_quiet((GENERATOR_CORE, SERVER_CORE), max_wait_s=args.quiet_wait)
            meter.start()
            load = generators.run_load(
                running.url, SCENARIOS[name], connections, args.duration, running.headers
            )
            cpu = meter.read()
            disturbed = (
                cpu["other_cpu_pct"] > args.max_other_cpu or cpu["steal_pct"] > args.max_steal
            )
            log(
                f"  {running.name:15} {name:10} c={connections:<3} {load.rps:9,.0f} req/s  "
                f"p50 {load.p50_us / 1e3:7.2f} ms  p99 {load.p99_us / 1e3:7.2f} ms  "
                f"cpu {cpu['server_cpu_pct']:3.0f}% mock {cpu['mock_cpu_pct']:3.0f}% "
                f"gen {cpu['generator_cpu_pct']:3.0f}% store {cpu['redis_cpu_pct']:3.0f}% "
                f"other {cpu['other_cpu_pct']:3.0f}% steal {cpu['steal_pct']:3.1f}%"
                + (f"  ERRORS {load.errors}: {load.error_detail}" if load.errors else "")
                + _disturbed_note(disturbed, attempt <= args.retries)
            )
            if not disturbed or attempt > args.retries:
                break
        row = {
            "round": round_no,
            "target": running.name,
            "scenario": name,
            "connections": connections,
            **asdict(load),
            "rps": load.rps,
            **cpu,
            "disturbed": disturbed,
            "attempts": attempt,
            "quiet_wait_s": waited,
        }
        loads.append(row)
    probes = []
    if "stream" in args.scenarios:
        procs.wait_quiet((GENERATOR_CORE, SERVER_CORE), max_wait_s=args.quiet_wait)
        probe = generators.run_probe(
            running.url,
            SCENARIOS["stream"],
            args.probe_requests,
            running.headers,
            budget_s=max(3.0, args.duration * 2),
        )
        probes.append(
            {"round": round_no, "target": running.name, "scenario": "stream", **asdict(probe)}
        )
        log(
            f"  {running.name:15} stream probe: TTFB p50 {probe.ttfb_p50_us / 1e3:.2f} ms "
            f"p99 {probe.ttfb_p99_us / 1e3:.2f} ms over {probe.requests} requests"
        )
    return loads, probes


def _disturbed_note(disturbed: bool, again: bool) -> str:
    if not disturbed:
        return ""
    return "  disturbed by other work or the host: " + (
        "running it again" if again else "kept, marked"
    )


def profile_spendgate(bench: targets.Bench, args: argparse.Namespace) -> Path | None:
    """py-spy record (raw collapsed stacks) of a fresh spendgate under chat load at the
    largest connection count; returns the stacks file."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        log("profile: py-spy not found (pip install py-spy)")
        return None
    out = bench.workdir / "profile-spendgate-chat.txt"
    running = targets.start_spendgate(bench)
    try:
        generators.run_probe(running.url, SCENARIOS["chat"], 200, running.headers, budget_s=5)
        seconds = max(3, int(args.duration))
        spy = subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(running.pid), "--duration", str(seconds)),
                *("--rate", "100", "--format", "raw", "-o", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = generators.run_load(
            running.url, SCENARIOS["chat"], max(args.connections), seconds + 1, running.headers
        )
        spy.wait(timeout=seconds + 30)
        log(f"profile: {load.rps:,.0f} req/s while sampling; stacks in {out}")
    finally:
        running.stop()
    return out if out.exists() else None


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    litellm_version = None
    if targets.litellm_installed():
        done = subprocess.run(
            [
                str(targets.LITELLM_VENV / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        litellm_version = done.stdout.strip() or None
    git = ["git", "-C", str(targets.REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "gateway"], capture_output=True, text=True
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gateway_commit": commit.stdout.strip() + (" (gateway/ modified)" if dirty.stdout else ""),
        "command": "python loadtests/run.py " + " ".join(sys.argv[1:]),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "litellm": litellm_version,
        "wrk": shutil.which("wrk") is not None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stop cleanly (servers and mock too) on Ctrl-C or kill, even when started in the
    # background by a shell that ignores SIGINT for its children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if (os.cpu_count() or 1) < 2:
        log("needs 2 cores: one for the server under test, one for the generator and mock")
        return 2
    os.sched_setaffinity(0, {GENERATOR_CORE})  # the probe and Python generator run in here
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or RESULTS / f"{stamp}.json"
    workdir = out.with_suffix("")  # generated configs, logs and profiles of this run
    workdir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    if "litellm" in args.targets and not targets.litellm_installed():
        if args.quick or args.no_install:
            skipped["litellm"] = f"{targets.LITELLM_VENV} not installed"
            args.targets.remove("litellm")
        else:
            log(f"installing litellm[proxy] into {targets.LITELLM_VENV} ...")
            targets.install_litellm()
    generator = "wrk" if generators.have_wrk() else generators.PYTHON_GENERATOR
    meta = {
        **environment(args),
        "generator": generator,
        "targets": args.targets,
        "scenarios": args.scenarios,
        "connections": args.connections,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "server_core": SERVER_CORE,
        "generator_core": GENERATOR_CORE,
        "access_log": "spendgate access log on, written to /dev/null"
        if not args.server_logs
        else "server output kept in the run dir",
        "overlays": [str(p) for p in args.overlay],
        "skipped": skipped,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "workdir": str(workdir),
    }
    results: dict[str, Any] = {"meta": meta, "loads": [], "probes": [], "starts": []}
    log(f"generator: {generator}; targets {args.targets}; results in {workdir}")
    mock_log = workdir / "mock.log" if args.server_logs else None
    mock_proc, mock_url = targets.start_mock(GENERATOR_CORE, mock_log)
    need_redis = args.redis or "spendgate-redis" in args.targets
    redis_proc, redis_server_url = (
        targets.start_redis(GENERATOR_CORE) if need_redis else (None, None)
    )
    redis_pids: tuple[int, ...] = (redis_proc.pid,) if redis_proc is not None else ()
    redis_url = redis_server_url if args.redis else "memory://" if args.memory else None
    cluster_procs: list[subprocess.Popen[bytes]] = []
    if args.cluster:
        cluster_procs, redis_url = targets.start_cluster(GENERATOR_CORE)
        redis_pids = tuple(p.pid for p in cluster_procs)
    meta["spendgate_store"] = (
        "redis-server on the generator's core"
        if args.redis
        else "Redis Cluster, 3 primaries on the generator's core"
        if args.cluster
        else "memory:// (in-process)"
        if args.memory
        else "local:// (its valkey-server on the generator's core)"
    )
    bench = targets.Bench(
        mock_url=mock_url,
        mock_pid=mock_proc.pid,
        workdir=workdir,
        server_core=SERVER_CORE,
        store_core=GENERATOR_CORE,
        server_logs=args.server_logs,
        overlays=tuple(args.overlay),
        redis_url=redis_url,
        redis_server_url=redis_server_url,
    )
    failed: str | None = None
    try:
        for round_no in range(1, args.rounds + 1):
            for name in args.targets:
                log(f"[round {round_no}/{args.rounds}] {name}")
                running = targets.STARTERS[name](bench)
                try:
                    loads, probes = measure_target(
                        running, args, mock_proc.pid, round_no, redis_pids
                    )
                    # The store's processes are not the gateway's, in either layout.
                    rss = procs.rss_bytes(running.pid, running.store_pids)
                finally:
                    running.stop()
                results["loads"] += loads
                results["probes"] += probes
                results["starts"].append(
                    {
                        "round": round_no,
                        "target": name,
                        "startup_s": running.startup_s,
                        "rss_bytes": rss,
                    }
                )
                start = f"{running.startup_s:.2f} s" if running.startup_s is not None else "-"
                log(f"  {name}: start-up {start}, RSS after load {rss / 2**20:.0f} MB")
        if args.profile and "spendgate" in args.targets:
            raw = profile_spendgate(bench, args)
            if raw is not None:
                results["profile"] = {"stacks": str(raw), "tables": report.profile_tables(raw)}
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        failed = str(exc)
        meta["failed"] = failed
    finally:
        procs.stop(mock_proc)
        if redis_proc is not None:
            procs.stop(redis_proc)
        for proc in cluster_procs:
            procs.stop(proc)
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    out.write_text(json.dumps(results, indent=1))
    if failed:
        log(f"FAILED: {failed} (partial results in {out})")
        return 1
    print(report.render(results))
    if "profile" in results:
        print("\npy-spy, spendgate under chat load:\n\n" + results["profile"]["tables"])
    print(f"\nresults: {out}")
    errors = report.error_count(results)
    if errors:
        log(f"{errors} failed requests: see ERRORS above")
        return 1
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    log(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(code)
