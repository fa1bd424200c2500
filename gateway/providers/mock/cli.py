"""`spendgate mock-upstream`: run the mock upstream as a process until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable

from gateway.listen import PortUnavailable
from gateway.providers.base import MOCK_PORT
from gateway.providers.mock.options import MockOptions
from gateway.providers.mock.server import serve_mock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spendgate mock-upstream",
        description="A deterministic OpenAI- and Anthropic-compatible upstream for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=MOCK_PORT,
        help="port to listen on (default: %(default)s, where the default config looks)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before answering (default: 0)"
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks (default: 0)"
    )
    parser.add_argument(
        "--completion-tokens", type=int, default=16, help="reply length in words (default: 16)"
    )
    parser.add_argument("--no-usage", action="store_true", help="never report token usage")
    return parser


async def run(host: str, port: int, options: MockOptions) -> None:
    runner = await serve_mock(host, port, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handling SIGINT here too means Ctrl-C stops cleanly, and so does `kill -INT` on a
    # background process, which shells start with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"mock upstream listening on http://{host}:{bound}", flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = MockOptions(
        latency_s=args.latency_ms / 1000,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        completion_tokens=args.completion_tokens,
        report_usage=not args.no_usage,
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
            r.run(run(args.host, args.port, options))
    except PortUnavailable as exc:
        # Most likely another mock (a `spendgate demo` runs one too): one on another port works
        # once the gateway is told where it is.
        option = (
            "--port, and point the gateway at it: "
            f"SPENDGATE_UPSTREAM_URL=http://{args.host}:<port>/v1 spendgate serve"
        )
        print(f"spendgate mock-upstream: {exc.message(option)}", file=sys.stderr)
        return 1
    return 0
