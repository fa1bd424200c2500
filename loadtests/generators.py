"""Load generators: wrk (C, one thread, a Lua script per scenario) when installed, else a Python
aiohttp closed-loop generator, labelled as such in every result; and the one-client probe that
measures time to first byte and total latency request by request.

Every run is bounded: wrk by `-d` plus a kill timeout, the Python ones by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from loadtests.scenarios import Scenario

WRK = "wrk"
PYTHON_GENERATOR = "python-aiohttp (wrk not installed: slower, numbers not comparable to wrk's)"
_REQUEST_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Load:
    """One generator run against one target: throughput, latency under load, errors."""

    generator: str
    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    errors: int
    error_detail: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class Probe:
    """One client, one request at a time: time to first body byte and to the last one."""

    requests: int
    ttfb_p50_us: float
    ttfb_p99_us: float
    total_p50_us: float
    total_p99_us: float
    errors: int


def have_wrk() -> bool:
    return shutil.which(WRK) is not None


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_load(
    url: str,
    scenario: Scenario,
    connections: int,
    duration_s: float,
    headers: Mapping[str, str],
) -> Load:
    """Closed-loop load at `connections` for `duration_s`, with wrk if it is installed."""
    if have_wrk():
        return _wrk(url, scenario, connections, duration_s, headers)
    return _run(_python_load(url, scenario, connections, duration_s, headers))


def _wrk(
    url: str,
    scenario: Scenario,
    connections: int,
    duration_s: float,
    headers: Mapping[str, str],
) -> Load:
    seconds = max(1, math.ceil(duration_s))  # wrk takes whole seconds
    cmd = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{_REQUEST_TIMEOUT_S:g}s"]
    cmd += ["-s", str(scenario.wrk_script)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += [url, "--", secrets.token_hex(8)]  # the scripts' salt: no run repeats another's bodies
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("SPENDGATE_WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    stats = json.loads(line.removeprefix("SPENDGATE_WRK "))
    kinds = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    detail = ", ".join(f"{stats[k]} {k}" for k in kinds if stats[k])
    return Load(
        generator="wrk",
        requests=stats["requests"],
        duration_s=stats["duration_us"] / 1e6,
        p50_us=stats["p50_us"],
        p99_us=stats["p99_us"],
        errors=sum(stats[k] for k in kinds),
        error_detail=detail,
    )


async def _python_load(
    url: str,
    scenario: Scenario,
    connections: int,
    duration_s: float,
    headers: Mapping[str, str],
) -> Load:
    latencies: list[float] = []
    problems: list[str] = []
    next_body = scenario.bodies()
    target = url + scenario.path
    send_headers = {**headers, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(target, data=next_body(), headers=send_headers) as r:
                        await r.read()
                        if r.status != 200:
                            problems.append(f"HTTP {r.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problems.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(
        generator=PYTHON_GENERATOR,
        requests=len(latencies),
        duration_s=elapsed,
        p50_us=percentile(latencies, 50) * 1e6,
        p99_us=percentile(latencies, 99) * 1e6,
        errors=len(problems),
        error_detail=", ".join(sorted(set(problems))),
    )


def run_probe(
    url: str, scenario: Scenario, requests: int, headers: Mapping[str, str], budget_s: float
) -> Probe:
    """`requests` sequential requests on one kept-alive connection (after a short warm-up),
    stopping early when `budget_s` is spent."""
    return _run(_probe(url, scenario, requests, headers, budget_s))


async def _probe(
    url: str, scenario: Scenario, requests: int, headers: Mapping[str, str], budget_s: float
) -> Probe:
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    next_body = scenario.bodies()
    target = url + scenario.path
    send_headers = {**headers, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + budget_s
        warmup = min(20, requests)
        for i in range(warmup + requests):
            if time.perf_counter() > deadline:
                break
            body = next_body()
            t0 = time.perf_counter()
            try:
                async with session.post(target, data=body, headers=send_headers) as r:
                    first = await r.content.readany()
                    t1 = time.perf_counter()
                    await r.read()
                    t2 = time.perf_counter()
                    ok = r.status == 200 and bool(first)
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if not ok:
                errors += 1
            elif i >= warmup:
                ttfb.append(t1 - t0)
                total.append(t2 - t0)
    ttfb.sort()
    total.sort()
    return Probe(
        requests=len(total),
        ttfb_p50_us=percentile(ttfb, 50) * 1e6,
        ttfb_p99_us=percentile(ttfb, 99) * 1e6,
        total_p50_us=percentile(total, 50) * 1e6,
        total_p99_us=percentile(total, 99) * 1e6,
        errors=errors,
    )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when available (the client's own overhead is then smaller)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
