"""Wiring: build the aiohttp application from a config and own every component's lifetime.

`create_app` is the only place components meet: store, HTTP session, keyring, router,
providers, pipeline, config reload. Each lives in a cleanup context, so it is opened when the
app starts and closed, in reverse order, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from gateway.accounting import Accountant
from gateway.aggregator.child import AggregatorChild, aggregator_socket
from gateway.analytics.outlook import Forecaster
from gateway.app.dashboard import dashboard_routes
from gateway.app.handlers import ops_routes, v1_routes
from gateway.app.middleware import error_middleware
from gateway.app.openapi import admin_routes
from gateway.app.preflight import check_upstreams
from gateway.app.serverlog import ServerLog
from gateway.app.state import (
    AGGREGATOR_METRICS,
    ALERTS,
    BUDGETS,
    CLOCK,
    FORECASTER,
    KEYRING,
    LEDGER,
    LIVE_CONFIG,
    METRICS,
    PIPELINE,
    REDIS,
    SPOOL,
)
from gateway.budgets.alerts import AlertSender
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.budgets.spool import Spool, adopt_segments, orphaned_directories, process_directory
from gateway.cache.store import ResponseCache
from gateway.config.model import Config, StoreConfig
from gateway.config.reload import LiveConfig
from gateway.listen import LISTENING
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.pricing.tokens import counts_exactly
from gateway.providers.factory import build_providers
from gateway.providers.http1 import Http1Client
from gateway.routing.router import Router
from gateway.store.connect import close_store, open_store, redact_url, serves_inside
from gateway.store.keys import Keyring
from gateway.store.server import LocalServer, local_url

log = logging.getLogger("spendgate.app")


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Which of the processes of `serve --workers N` an app runs in."""

    index: int
    count: int


TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("tasks")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http")  # webhooks
UPSTREAM: web.AppKey[Http1Client] = web.AppKey("upstream")  # provider calls
WORKER: web.AppKey[WorkerSlot | None] = web.AppKey("worker")
ACCESS_WRITER: web.AppKey[Callable[[dict[str, Any]], None] | None] = web.AppKey("access_writer")
LOCAL_SERVER: web.AppKey[LocalServer] = web.AppKey("local_server")  # local:// in one process

# aiohttp's own hard cap on a request body; the configured limit (checked in the pipeline,
# reloadable) must stay below it to be the one a client meets.
_HARD_BODY_LIMIT = 256 * 1024 * 1024
_CUT_GRACE_S = 5.0  # for requests cut at the drain deadline to write their last bytes


def spawn(app: web.Application, coro: Coroutine[Any, Any, None]) -> None:
    """Run a background task owned by the app; it is cancelled and awaited on shutdown."""
    task = asyncio.get_running_loop().create_task(coro)
    app[TASKS].add(task)
    task.add_done_callback(app[TASKS].discard)


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    owned: set[asyncio.Task[None]] = set()
    app[TASKS] = owned
    yield
    tasks = list(owned)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store client; for `local://`, the server too, unless this is one of `serve
    --workers N`, whose supervisor runs it. Stopped last, once everything is settled into it."""
    store = app[LIVE_CONFIG].current.store
    server = None
    if store.local and app[WORKER] is None:
        server = app[LOCAL_SERVER] = LocalServer(store.data_dir)
        await server.start()
        url = server.url
    else:
        url = local_url(store.data_dir) if store.local else store.url
    app[REDIS] = await open_store(url)
    if store.embedded:
        log.warning(
            "store is in-process (memory://): keys and spend are kept in this process "
            "only and lost when it stops; remove store.url to keep them in %s",
            store.data_dir,
        )
    elif not store.local:
        log.info("store: %s", redact_url(url))
    try:
        yield
    finally:
        await close_store(app[REDIS])
        if server is not None:
            await server.stop()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    app[HTTP] = aiohttp.ClientSession(connector=connector, auto_decompress=True)
    app[UPSTREAM] = Http1Client()
    yield
    await app[UPSTREAM].aclose()
    await app[HTTP].close()


async def _budgets_ctx(app: web.Application) -> AsyncIterator[None]:
    """Budgets in force, the ledger, the spool for outages and the alert sender."""
    config, redis, metrics = app[LIVE_CONFIG].current, app[REDIS], app[METRICS]
    app[BUDGETS] = BudgetRegistry(redis, config.budgets.rules)
    app[LEDGER] = ledger = BudgetLedger(
        redis,
        clock=app[CLOCK],
        lease_fraction=config.budgets.lease_fraction,
        lease_window_s=config.budgets.lease_window_s,
    )
    app[ALERTS] = AlertSender(app[HTTP], redis, config.alerts, metrics.alerts)
    # The in-process store cannot become unreachable, so it needs no spool.
    spool = None if config.store.embedded else _open_spool(config.store, app[WORKER], metrics)
    if spool is not None:
        app[SPOOL] = spool
        spawn(app, spool.maintain(ledger))
    spawn(app, app[BUDGETS].refresh_forever())
    yield
    if spool is not None:
        # What the store refused while it was away goes in now if it is back, else stays on
        # disk (fsync'd) for the next start.
        if spool.pending():
            with contextlib.suppress(RedisError, OSError):
                async with asyncio.timeout(_CUT_GRACE_S):
                    await spool.replay(ledger)
        spool.close()


def _open_spool(store: StoreConfig, slot: WorkerSlot | None, metrics: Metrics) -> Spool:
    """This process's spool (one directory per worker), after adopting the segments that no
    process of this run would replay otherwise (left by a run with another `--workers`)."""
    index, count = (None, 1) if slot is None else (slot.index, slot.count)
    directory = process_directory(store.spool_dir, index)
    adopt_segments(directory, orphaned_directories(store.spool_dir, index, count))
    # An explicit gauge rather than set_function: those do not work in multiprocess mode.
    return Spool(
        directory,
        store.spool_max_bytes,
        store.spool_fsync_interval_s,
        on_size=metrics.spool_bytes.set,
    )


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    live, metrics = app[LIVE_CONFIG], app[METRICS]
    config = live.current
    keyring = Keyring(app[REDIS], config.keys, config.server.key_cache_ttl_s, wall_clock=app[CLOCK])
    accountant = Accountant(
        app[LEDGER],
        app[BUDGETS],
        app.get(SPOOL),
        app[ALERTS],
        metrics,
        app[ACCESS_WRITER],
        clock=app[CLOCK],
    )
    # With the in-process store the process memory is the only level: a fakeredis copy would
    # be a second, unbounded one.
    cache = ResponseCache(
        None if config.store.embedded or not config.cache.use_redis else app[REDIS],
        config.cache.memory_max_bytes,
        max_entry_bytes=config.cache.max_entry_bytes,
        redis_max_bytes=config.cache.redis_max_bytes,
        metrics=metrics,
        clock=app[CLOCK],
    )
    pipeline = Pipeline(
        config,
        build_providers(config, app[UPSTREAM]),
        keyring,
        Router(metrics),
        metrics,
        accountant,
        cache,
        store=app[REDIS],
        clock=app[CLOCK],
    )
    app[KEYRING], app[PIPELINE] = keyring, pipeline
    _load_vocabularies(config)

    def on_swap(old: Config, new: Config) -> None:
        pipeline.swap(new, build_providers(new, app[UPSTREAM]))
        keyring.set_declared(new.keys, ttl_s=new.server.key_cache_ttl_s)
        app[BUDGETS].set_config_rules(new.budgets.rules)
        app[LEDGER].configure_leases(new.budgets.lease_fraction, new.budgets.lease_window_s)
        app[ALERTS].set_config(new.alerts)
        cache.memory.max_bytes = new.cache.memory_max_bytes
        cache.max_entry_bytes = new.cache.max_entry_bytes
        cache.redis_max_bytes = new.cache.redis_max_bytes

    def on_result(ok: bool, reason: str) -> None:
        metrics.config_reloads.labels("ok" if ok else "failed").inc()

    live.listeners.append(on_swap)
    live.on_result = on_result
    loop = asyncio.get_running_loop()
    if live.path is not None:
        spawn(app, live.watch())
        live.install_sighup(loop)
    yield
    live.remove_sighup(loop)
    live.listeners.remove(on_swap)
    await pipeline.aclose()
    await accountant.drain()
    await app[LEDGER].close_leases()
    await cache.aclose()
    flush = getattr(app[ACCESS_WRITER], "flush", None)
    if flush is not None:
        flush()


async def _aggregator_ctx(app: web.Application) -> AsyncIterator[None]:
    """With spendgate's own store (local://, memory://) there is no separate `spendgate
    aggregate`. The local store's runs as a child process (`aggregator.child`; with `serve
    --workers N`, the supervisor's), off the request path's core, started once the port is
    bound; memory://'s (one per process), and local://'s when the config is not a file (the
    demo), runs here."""
    worker, live = app[WORKER], app[LIVE_CONFIG]
    store = live.current.store
    if store.local and (worker is not None or live.path is not None):
        app[AGGREGATOR_METRICS] = aggregator_socket(store.data_dir)
        if worker is not None:  # the supervisor runs it
            yield
            return
        assert live.path is not None
        child = AggregatorChild(live.path, app[AGGREGATOR_METRICS], _log_level())
        async with child.running_once(app[LISTENING]):
            yield
        return
    if not serves_inside(store.url) or (worker and worker.index):
        yield
        return
    from gateway.aggregator.forecasts import ForecastAlerts
    from gateway.aggregator.metrics import AggregatorMetrics
    from gateway.aggregator.service import run_embedded

    stop = asyncio.Event()
    metrics = AggregatorMetrics(app[METRICS].registry)
    forecasts = ForecastAlerts(
        app[REDIS],
        live.current,
        app[ALERTS],
        app[BUDGETS],
        app[LEDGER],
        forecaster=app[FORECASTER],
        metrics=metrics,
        clock=app[CLOCK],
    )
    task = asyncio.get_running_loop().create_task(
        run_embedded(
            app[REDIS],
            lambda: live.current,
            stop,
            metrics=metrics,
            clock=app[CLOCK],
            forecast_alerts=forecasts,
            alerts=app[ALERTS],
        )
    )
    yield
    # Cancelling mid-batch is safe (unapplied entries stay pending); waiting for a blocking
    # read to time out would only slow shutdown down.
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _log_level() -> str:
    """This process's log level, for the processes it starts."""
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


def create_app(
    config: Config,
    config_path: str | None = None,
    metrics: Metrics | None = None,
    *,
    worker: WorkerSlot | None = None,
    access_writer: Callable[[dict[str, Any]], None] | None = None,
    freeze_heap: bool = False,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """`worker`: set when this app is one of `serve --workers N` (see `app.workers`).
    `access_writer`: where access lines go instead of `logging` (`serve` passes `AccessWriter`).
    `freeze_heap`: once started, exempt everything built so far from garbage collection (a
    process that serves only this app: `serve`).
    `clock`: the wall clock of events, budget periods and reports (tests fix it)."""
    metrics = metrics or Metrics()
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=_HARD_BODY_LIMIT,
        handler_args={"logger": ServerLog(metrics.http_bad_requests)},
    )
    app[LIVE_CONFIG] = LiveConfig(config, config_path)
    app[METRICS] = metrics
    app[WORKER] = worker
    app[ACCESS_WRITER] = access_writer
    app[CLOCK] = clock
    app[FORECASTER] = Forecaster()
    app[LISTENING] = asyncio.Event()
    app.cleanup_ctx.extend(
        [_tasks_ctx, _store_ctx, _http_ctx, _budgets_ctx, _aggregator_ctx, _pipeline_ctx]
    )
    app.add_routes(v1_routes())
    app.add_routes(ops_routes())
    app.add_routes(admin_routes())
    app.add_routes(dashboard_routes())
    app.on_startup.append(_preflight)
    app.on_shutdown.append(_drain)
    if freeze_heap:
        app.on_startup.append(_freeze_heap)
    return app


async def _drain(app: web.Application) -> None:
    """A graceful stop (SIGTERM): the port is closed and idle connections with it; let the
    requests and streams in flight finish, up to `server.drain_s`, then cut those that remain
    (streams end with an error event and are billed for what they generated). Settling, the
    spool and the access log follow, in the cleanup contexts."""
    pipeline = app.get(PIPELINE)
    if pipeline is None:  # it failed to start: nothing was served
        return
    cutoff = pipeline.cutoff
    drain_s = app[LIVE_CONFIG].current.server.drain_s
    if cutoff.tasks:
        log.info("stopping: %d requests in flight, draining up to %g s", len(cutoff.tasks), drain_s)
    if await cutoff.idle(drain_s):
        return
    log.warning("stopping: drain time (%g s) is over, ending %d requests", drain_s, cutoff.cut())
    if not await cutoff.idle(_CUT_GRACE_S):
        log.error("stopping: %d requests did not end after the cut", len(cutoff.tasks))


async def _preflight(app: web.Application) -> None:
    spawn(app, check_upstreams(app[LIVE_CONFIG].current))


def _load_vocabularies(config: Config) -> None:
    """Load the tokenizer of every configured model now (0.1-0.3 s each, once per vocabulary)
    rather than on the event loop in the middle of the first requests that need it."""
    names = set(config.models)
    names.update(d.model for route in config.models.values() for d in route.deployments)
    for name in sorted(names):
        counts_exactly(name)


async def _freeze_heap(app: web.Application) -> None:
    """What start-up built (config, price table, routes, clients) lives as long as the process.
    Frozen, a full collection (which the request path's short-lived objects set off now and
    then) no longer walks it: under embeddings load those pauses made the p99."""
    gc.collect()
    gc.freeze()
    _trim_heap()


def _trim_heap() -> None:
    """Give the C heap that start-up freed (the price table's and the vocabularies' files, read
    and parsed) back to the system: 7 MB of resident memory. glibc only; elsewhere, nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
