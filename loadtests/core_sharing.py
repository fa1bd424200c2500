"""What a CPU burst on a shared core does to a request crossing it, without spendgate.

    python loadtests/core_sharing.py [--modes none,plain,yield,idle] [--rounds 3]

A client on core 1 sends 32-byte messages to an echo server on core 0 (~10 us of work per
message) and waits for each answer, pausing 0.3 ms between them: the gateway calling an upstream
or its store at one client. Beside the server on core 0 a pure-Python burner is busy 1.5 ms of
every 15 ms, as the aggregator's applies were (docs/benchmarks.md, "The aggregator gives its core
way"). Modes: `none` (no burner), `plain`, `yield` (`sched_yield()` every 0.1 ms of the burst,
what `gateway/slices.py` does; `yield250` every 0.25 ms, and so on), `idle` (`SCHED_IDLE`),
`batch` (`SCHED_BATCH`). Rounds interleave the modes; prints each cell's p50 / p99 / p99.9 of
the round trip and the medians of the rounds. Linux only (pinning and scheduling policies).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import time
from multiprocessing.synchronize import Event

SERVER_CORE, CLIENT_CORE = 0, 1
BURST_S, PERIOD_S = 0.0015, 0.015


def _server(listener: socket.socket) -> None:
    os.sched_setaffinity(0, {SERVER_CORE})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(64):
        x = 0
        for i in range(300):  # ~10 us: an upstream's answer
            x += i
        conn.sendall(data)


def _burner(mode: str, stop: Event) -> None:
    os.sched_setaffinity(0, {SERVER_CORE})
    every = int(mode[5:] or 100) / 1e6 if mode.startswith("yield") else 0.0
    if mode == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif mode == "batch":
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    while not stop.is_set():
        start = last = time.perf_counter()
        while (now := time.perf_counter()) - start < BURST_S:
            x = 0
            for i in range(50):
                x += i
            if every and now - last >= every:
                os.sched_yield()
                last = now
        time.sleep(PERIOD_S - BURST_S)


def _client(port: int, seconds: float) -> tuple[float, float, float]:
    os.sched_setaffinity(0, {CLIENT_CORE})
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    took: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sent = time.perf_counter()
        conn.sendall(b"x" * 32)
        conn.recv(64)
        took.append(time.perf_counter() - sent)
        time.sleep(0.0003)  # the gateway's own work between its calls
    conn.close()
    took.sort()

    def ms(q: float) -> float:
        return took[int(len(took) * q)] * 1e3

    return ms(0.5), ms(0.99), ms(0.999)


def cell(mode: str, seconds: float) -> tuple[float, float, float]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = mp.Process(target=_server, args=(listener,))
    server.start()
    stop = mp.Event()
    burner = None if mode == "none" else mp.Process(target=_burner, args=(mode, stop))
    if burner is not None:
        burner.start()
    try:
        return _client(listener.getsockname()[1], seconds)
    finally:
        stop.set()
        if burner is not None:
            burner.join()
        server.join()
        listener.close()


def main() -> int:
    p = argparse.ArgumentParser(prog="python loadtests/core_sharing.py", description=__doc__)
    p.add_argument("--modes", default="none,plain,yield,idle")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="per cell")
    args = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores")
        return 2
    modes = args.modes.split(",")
    p99s: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            p50, p99, p999 = cell(mode, args.seconds)
            p99s[mode].append(p99)
            print(f"round {r + 1} {mode:9} p50 {p50:.3f} ms  p99 {p99:.3f} ms  p99.9 {p999:.3f} ms")
    for mode, values in p99s.items():
        print(f"{mode:9} p99, median of {args.rounds} rounds: {statistics.median(values):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
