"""The aggregator as a running service: the consumer loop, the archive loop, anomaly detection,
the budget forecast alerts and the weekly review digests, following the config (its
`aggregator:`, `anomalies:` and `forecasts:` sections, the budgets and webhooks, the review
schedule, and the deployments' prices that price the FOCUS lines).
`spendgate aggregate` runs it against a shared Redis (or the local store, as `serve`'s child);
`serve` runs it as an app task when the store is in-process (`run_embedded`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.aggregator.archive import Archiver
from gateway.aggregator.consumer import Aggregator
from gateway.aggregator.detector import AnomalyDetector
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.aggregator.prices import PriceList
from gateway.aggregator.reviews import ReviewDigests
from gateway.aggregator.rollups import SeriesSpec
from gateway.budgets.registry import BudgetRegistry
from gateway.slices import NO_SLICES, Slices

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.aggregator.forecasts import ForecastAlerts
    from gateway.budgets.alerts import AlertSender
    from gateway.config.model import Config

_FOLLOW_S = 1.0  # how soon a reloaded `aggregator:` section takes effect


async def run_service(
    redis: Redis,
    config_getter: Callable[[], Config],
    stop: asyncio.Event,
    *,
    metrics: AggregatorMetrics | None = None,
    consumer: str | None = None,
    clock: Callable[[], float] = time.time,
    forecast_alerts: ForecastAlerts | None = None,
    alerts: AlertSender | None = None,
    slices: Slices = NO_SLICES,
) -> None:
    """Consume, apply, archive, detect anomalies and (with `forecast_alerts`) check budgets
    against their forecasts until `stop` is set, following `config_getter()`. `alerts` sends
    the anomaly alerts (none: they are only recorded). Store outages are retried inside the
    loops; anything else stops them all and propagates. `clock`: the wall clock rollup
    lifetimes are measured against and fine buckets close on (the archive follows the stream
    ids, which are Redis's own time). `slices`: given in a process of the aggregator's own (not
    a gateway), it gives its core way during the applies and the detection (`gateway.slices`)."""
    current = config_getter()
    metrics = metrics or AggregatorMetrics()
    aggregator = Aggregator(
        redis,
        current.aggregator,
        consumer=consumer,
        metrics=metrics,
        clock=clock,
        prices=PriceList.from_config(current),
        series=SeriesSpec.from_config(current.anomalies),
        slices=slices,
    )
    archiver = Archiver(redis, current.aggregator, metrics=metrics)
    detector = AnomalyDetector(
        redis,
        current.anomalies,
        teams=lambda: current.teams,
        alerts=alerts,
        metrics=metrics,
        clock=clock,
        slices=slices,
    )

    reviews = None
    if alerts is not None:  # the weekly digests go out through the same sender
        registry = BudgetRegistry(redis, current.budgets.rules)
        reviews = ReviewDigests(redis, current, alerts, registry, clock=clock)

    async def follow() -> None:
        nonlocal current
        while not stop.is_set():
            latest = config_getter()
            if latest is not current:  # a reload: its prices price the lines from now on
                current = latest
                aggregator.prices = PriceList.from_config(latest)
                aggregator.series = SeriesSpec.from_config(latest.anomalies)
                detector.config = latest.anomalies
                if alerts is not None:
                    alerts.set_config(latest.alerts)
                if forecast_alerts is not None:
                    forecast_alerts.set_config(latest)
                if reviews is not None:
                    reviews.set_config(latest)
            aggregator.config = archiver.config = latest.aggregator
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_FOLLOW_S)

    async with asyncio.TaskGroup() as group:
        group.create_task(aggregator.run(stop))
        group.create_task(archiver.run(stop))
        group.create_task(detector.run(stop))
        group.create_task(follow())
        if forecast_alerts is not None:
            group.create_task(forecast_alerts.run(stop))
        if reviews is not None:
            group.create_task(reviews.run(stop))


async def run_embedded(
    redis: Redis,
    config_getter: Callable[[], Config],
    stop: asyncio.Event,
    *,
    metrics: AggregatorMetrics | None = None,
    clock: Callable[[], float] = time.time,
    forecast_alerts: ForecastAlerts | None = None,
    alerts: AlertSender | None = None,
) -> None:
    """The aggregator inside `serve` for the embedded store (memory://): the same loops and
    guarantees, on the gateway's event loop. Build `metrics` once, on the app's registry."""
    await run_service(
        redis,
        config_getter,
        stop,
        metrics=metrics,
        clock=clock,
        forecast_alerts=forecast_alerts,
        alerts=alerts,
    )
