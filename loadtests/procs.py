"""Processes under test: spawn pinned to a core, wait for the first served request, stop, and
read resident memory and CPU time from /proc (each summed over the process and its children).

Linux only: pinning is sched_setaffinity (what `taskset -c N` does) and the readings are /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _pin_and_tie(cores: set[int]) -> None:
    """In the child before exec: pin it to `cores`, and have the kernel SIGKILL it if the
    harness dies without stopping it (killed by a test timeout, say), so no server outlives a
    run."""
    os.sched_setaffinity(0, cores)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    cmd: list[str],
    *,
    core: int | set[int],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` pinned to `core` (or a set of cores), in its own session (so `stop` reaches
    its children; they inherit the pinning).
    Output goes to `log`, or to /dev/null (servers under test log every request)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _pin_and_tie({core} if isinstance(core, int) else core),
        )
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


def stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it is still there."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


def wait_ready(
    proc: subprocess.Popen[bytes] | None,
    port: int,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    started: float,
    timeout_s: float,
) -> float:
    """Poll with a real POST every 5 ms until one answers 200; return seconds since `started`.
    Raises RuntimeError if the process exits or `timeout_s` passes first."""
    deadline = started + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before serving ({last})")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(0.5, timeout_s / 4))
        try:
            conn.request("POST", path, body=body, headers=dict(headers))
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return time.monotonic() - started
            last = f"HTTP {response.status}"
        except OSError as exc:
            last = type(exc).__name__
        finally:
            conn.close()
        time.sleep(0.005)
    raise RuntimeError(f"not serving after {timeout_s:.0f} s ({last})")


def _family(pid: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """`pid` and all its descendants, from /proc/<pid>/task/<tid>/children, without the
    processes in `exclude` and theirs."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in exclude:
            continue
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in children.read_text().split())
    return found


def descendants_running(pid: int, word: bytes) -> list[int]:
    """The descendants of `pid` whose command line has `word` as one of its arguments."""
    found = []
    for member in _family(pid)[1:]:
        with contextlib.suppress(OSError):
            if word in Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0"):
                found.append(member)
    return found


def rss_bytes(pid: int, exclude: tuple[int, ...] = ()) -> int:
    """Resident memory (VmRSS) of `pid` and its descendants (but `exclude`)."""
    total = 0
    for member in _family(pid, exclude):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int, exclude: tuple[int, ...] = ()) -> float:
    """User + system CPU time used so far by `pid` and its live descendants (but `exclude`)."""
    ticks = 0
    for member in _family(pid, exclude):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{member}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLK_TCK


class CpuMeter:
    """CPU share of process families over an interval: `start()`, then `percent()`. `exclude`:
    descendants counted elsewhere (a child moved to another core)."""

    def __init__(self, *pids: int, exclude: tuple[int, ...] = ()) -> None:
        self.pids = pids
        self.exclude = exclude
        self._cpu = 0.0
        self._wall = 0.0

    def _used(self) -> float:
        return sum(cpu_seconds(pid, self.exclude) for pid in self.pids)

    def start(self) -> None:
        self._cpu, self._wall = self._used(), time.monotonic()

    def percent(self) -> float:
        wall = time.monotonic() - self._wall
        return 100.0 * (self._used() - self._cpu) / wall if wall > 0 else 0.0


def core_ticks(stat: str, core: int) -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of one CPU since boot, from the text of /proc/stat. Busy
    counts everything but idle and iowait, so it includes steal: time the hypervisor gave this
    vCPU's host thread to something else while the guest had work for it."""
    for line in stat.splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]  # idle + iowait
            steal = values[7] if len(values) > 7 else 0
            return sum(values) - idle, sum(values), steal
    return 0, 0, 0


class CoreMeter:
    """How busy one core was over an interval (all processes on it, and the host's steal):
    `start()`, `shares()`, `percent()`. For the generator's core: near 100 % means the
    generator and mock, not the server under test, set the pace."""

    def __init__(self, core: int) -> None:
        self.core = core
        self._busy, self._total, self._steal = 0, 0, 0

    def _read(self) -> tuple[int, int, int]:
        return core_ticks(Path("/proc/stat").read_text(), self.core)

    def start(self) -> None:
        self._busy, self._total, self._steal = self._read()

    def shares(self) -> tuple[float, float]:
        """(busy %, steal %) since `start`, from one reading, so both cover the same time."""
        busy, total, steal = self._read()
        if total <= self._total:
            return 0.0, 0.0
        span = total - self._total
        return 100.0 * (busy - self._busy) / span, 100.0 * (steal - self._steal) / span

    def percent(self) -> float:
        return self.shares()[0]


def wait_quiet(
    cores: tuple[int, ...],
    *,
    busy_pct: float = 15.0,
    window_s: float = 0.5,
    max_wait_s: float = 30.0,
) -> float:
    """Between cells, wait (at most `max_wait_s`) until no core in `cores` is more than
    `busy_pct` busy over `window_s`: on a shared machine other work would skew the next cell.
    Returns the seconds waited."""
    if max_wait_s <= 0:
        return 0.0
    started = time.monotonic()
    meters = [CoreMeter(c) for c in cores]
    while True:
        for meter in meters:
            meter.start()
        time.sleep(window_s)
        if all(m.percent() <= busy_pct for m in meters):
            return time.monotonic() - started
        if time.monotonic() - started >= max_wait_s:
            return time.monotonic() - started


def _own_cpu_seconds() -> float:
    """CPU used by this process and its finished children (wrk runs are children)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CellMeter:
    """Where the CPU went during one load cell, in % of one core: the server under test, the
    mock, the store's processes on the mock's core (Redis, the local store's server, an
    aggregator: `store_pids`), the generator (this harness plus its finished children, i.e.
    wrk), each core as a whole, on each core what none of those used (other work on the
    machine) and the host's steal (the busier core's): either makes the cell's figures
    suspect."""

    def __init__(
        self,
        server_pid: int,
        server_core: int,
        mock_pid: int,
        mock_core: int,
        store_pids: tuple[int, ...] = (),
    ) -> None:
        self.server = CpuMeter(server_pid, exclude=store_pids)
        self.mock = CpuMeter(mock_pid)
        self.redis = CpuMeter(*store_pids) if store_pids else None
        self.server_is_mock = server_pid == mock_pid
        self.server_core, self.mock_core = server_core, mock_core
        self.cores = {c: CoreMeter(c) for c in (server_core, mock_core)}
        self._own = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self.server.start()
        self.mock.start()
        if self.redis is not None:
            self.redis.start()
        for core in self.cores.values():
            core.start()
        self._own, self._wall = _own_cpu_seconds(), time.monotonic()

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        generator = 100.0 * (_own_cpu_seconds() - self._own) / wall if wall > 0 else 0.0
        server, mock = self.server.percent(), self.mock.percent()
        redis = self.redis.percent() if self.redis is not None else 0.0
        shares = {c: m.shares() for c, m in self.cores.items()}
        busy = {c: share[0] for c, share in shares.items()}
        steal = {c: share[1] for c, share in shares.items()}
        ours = {self.mock_core: mock + generator + redis, self.server_core: 0.0}
        if not self.server_is_mock:
            ours[self.server_core] += server
        return {
            "server_cpu_pct": server,
            "mock_cpu_pct": mock,
            "generator_cpu_pct": generator,
            "redis_cpu_pct": redis,
            "generator_core_pct": busy[self.mock_core],
            "server_core_pct": busy[self.server_core],
            # Never below zero: the processes' and the cores' clocks tick apart by a jiffy.
            "other_cpu_pct": max(0.0, *(busy[c] - ours[c] - steal[c] for c in busy)),
            "steal_pct": max(steal.values()),
        }
