"""`spendgate aggregate`: the aggregator as its own process, against a shared Redis.

Several may run at once (one consumer group; each batch is applied exactly once). With
spendgate's own stores `serve` runs it: for local:// as a child process, this command with the
hidden --gateway-child (see `aggregator.child`); for memory:// inside its own process.
SIGINT / SIGTERM stop it after the batch in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from gateway.clikit import (
    CliError,
    add_config_argument,
    add_log_level_argument,
    config_path,
    load_config,
)
from gateway.errors import ConfigError
from gateway.listen import PortUnavailable, check_port, start_site

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.aggregator.metrics import AggregatorMetrics

log = logging.getLogger("spendgate.aggregator")

_PARENT_FD = 0  # a gateway's child: stdin, see gateway.aggregator.child


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_log_level_argument(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://<--metrics-host>:PORT/metrics",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics port listens on (default: 127.0.0.1)",
    )
    # Set by `spendgate serve` on the aggregator it runs for the local store (aggregator.child):
    # use that store, serve the metrics on this unix socket, stop when stdin ends.
    parser.add_argument("--gateway-child", metavar="SOCKET", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.store.connect import serves_inside
    from gateway.store.server import local_url

    try:
        config = load_config(config_path(args.config))
    except CliError as exc:
        print(f"spendgate aggregate: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    url = config.store.url
    if args.gateway_child is not None and config.store.local:
        url = local_url(config.store.data_dir)  # the gateway's server, which runs already
    elif serves_inside(url):
        print(
            "spendgate aggregate: the store is spendgate's own (store.url: local:// or "
            "memory://), whose aggregator runs inside `spendgate serve`; run `spendgate "
            "aggregate` only with a Redis of yours (store.url: redis://...)",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.log_level, access_log=False)
    try:
        if args.metrics_port is not None:
            check_port(args.metrics_host, args.metrics_port)  # before anything starts
        return asyncio.run(_main(url, args))
    except PortUnavailable as exc:
        print(f"spendgate aggregate: {exc.message('--metrics-port')}", file=sys.stderr)
        return 1


async def _main(url: str, args: argparse.Namespace) -> int:
    import aiohttp

    from gateway.aggregator.forecasts import ForecastAlerts
    from gateway.aggregator.metrics import AggregatorMetrics
    from gateway.aggregator.service import run_service
    from gateway.budgets.alerts import AlertSender
    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.reload import LiveConfig
    from gateway.metrics import alerts_counter, describe_process
    from gateway.slices import Slices
    from gateway.store.connect import close_store, open_store, redact_url

    path = config_path(args.config)
    live = LiveConfig(load_config(path), path)  # follows edits of the `aggregator:` section
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    live.install_sighup(loop)
    child = args.gateway_child is not None
    if child:
        loop.add_reader(_PARENT_FD, _on_parent, loop, stop)
    metrics = AggregatorMetrics()
    if not child:  # a child's metrics are merged into its gateway's, which describes itself
        describe_process(metrics.registry)
    redis = await open_store(url)
    runner = await _serve_metrics(metrics, args.metrics_host, args.metrics_port, args.gateway_child)
    watcher = loop.create_task(live.watch())
    session = aiohttp.ClientSession()  # webhooks of the budget_forecast and anomaly alerts
    config = live.current
    alerts = AlertSender(session, redis, config.alerts, alerts_counter(metrics.registry))
    forecasts = ForecastAlerts(
        redis,
        config,
        alerts,
        BudgetRegistry(redis, config.budgets.rules),
        BudgetLedger(redis),
        metrics=metrics,
    )
    log.info("aggregating %s as one consumer of the group", redact_url(url))
    try:
        await run_service(
            redis,
            lambda: live.current,
            stop,
            metrics=metrics,
            forecast_alerts=forecasts,
            alerts=alerts,
            slices=Slices(),  # a process of its own: its bursts give way to the request path's
        )
    finally:
        await session.close()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        live.remove_sighup(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if child:
            loop.remove_reader(_PARENT_FD)
        if runner is not None:
            await runner.cleanup()
        if args.gateway_child is not None:
            # aiohttp leaves a unix socket's file behind; in the data directory it would make
            # a copy of the stopped directory (a backup) fail on a file that is no file.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.gateway_child)
        await close_store(redis)
    log.info("aggregator stopped")
    return 0


def _on_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """stdin of a gateway's child: end-of-file when the gateway is gone."""
    try:
        data = os.read(_PARENT_FD, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        loop.remove_reader(_PARENT_FD)
        if not stop.is_set():
            log.warning("the gateway is gone: stopping its aggregator")
            stop.set()


async def _serve_metrics(
    metrics: AggregatorMetrics, host: str, port: int | None, unix_path: str | None = None
) -> web.AppRunner | None:
    if port is None and unix_path is None:
        return None
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if unix_path is not None:
        await web.UnixSite(runner, unix_path).start()
        log.debug("metrics on the unix socket %s", unix_path)
        return runner
    assert port is not None
    try:
        await start_site(runner, host, port)
    except PortUnavailable:
        await runner.cleanup()
        raise
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
