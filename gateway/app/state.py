"""The application's state slots (aiohttp AppKeys). Components are built in `server.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config.reload import LiveConfig
    from gateway.metrics import Metrics
    from gateway.pipeline import Pipeline
    from gateway.store.keys import Keyring

LIVE_CONFIG: web.AppKey[LiveConfig] = web.AppKey("live_config")
REDIS: web.AppKey[Redis] = web.AppKey("redis")
KEYRING: web.AppKey[Keyring] = web.AppKey("keyring")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline")
# The wall clock (epoch seconds) that dates spend events, budget periods and reports; tests
# inject a fixed one so that no test depends on today's date.
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")

if TYPE_CHECKING:
    from gateway.analytics.outlook import Forecaster
    from gateway.budgets.alerts import AlertSender
    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.budgets.spool import Spool

BUDGETS: web.AppKey[BudgetRegistry] = web.AppKey("budgets")
LEDGER: web.AppKey[BudgetLedger] = web.AppKey("ledger")
SPOOL: web.AppKey[Spool] = web.AppKey("spool")
ALERTS: web.AppKey[AlertSender] = web.AppKey("alerts")
# Fitted forecasts, reused until a series changes (a day completes): the admin API's and the
# embedded aggregator's.
FORECASTER: web.AppKey[Forecaster] = web.AppKey("forecaster")
# The unix socket the local store's aggregator (a child process: aggregator.child) serves its
# metrics on, which /metrics merges in; unset where the aggregator is in-process or elsewhere.
AGGREGATOR_METRICS: web.AppKey[Path] = web.AppKey("aggregator_metrics")
