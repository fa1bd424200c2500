"""`budget_forecast` alerts, on the aggregator side: every `forecasts.interval_s`, one aggregator
replica (under a lease, so replicas do not all fit the same models) forecasts every budget that
has a period end and alerts, once per budget and period, those whose expected spend at the end
of the period is over their limit. The claim that makes it once per period lives in Redis
until the period ends (`AlertSender.send(hold_s=...)`), so replicas and restarts agree.

Not alerted: budgets already over their limit (the threshold and exceeded alerts speak for
them), `total` budgets (no period end to forecast to), and budgets whose spend has less history
than `forecasts.alert_min_history_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.aggregator.forecast_alert import forecast_alert
from gateway.aggregator.metrics import AggregatorMetrics
from gateway.analytics.outlook import BudgetOutlook, Clock, Forecaster, LimitOutlook
from gateway.budgets.alerts import BUDGET_FORECAST
from gateway.forecasting import budget_spends, outlooks

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets.alerts import AlertSender
    from gateway.budgets.ledger import BudgetLedger
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import Config

log = logging.getLogger("spendgate.aggregator.forecasts")

_HOLD_SLACK_S = 3600.0  # the claim outlives the period a little (clock skew between replicas)


class ForecastAlerts:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        sender: AlertSender,
        registry: BudgetRegistry,
        ledger: BudgetLedger,
        *,
        forecaster: Forecaster | None = None,
        metrics: AggregatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the wall clock (epoch seconds) of periods and forecasts; the ledger must
        read its counters on the same one."""
        self.redis = redis
        self.config = config
        self.sender = sender
        self.registry = registry
        self.ledger = ledger
        self.forecaster = forecaster or Forecaster()
        self.metrics = metrics or AggregatorMetrics()
        self.clock = clock

    def set_config(self, config: Config) -> None:
        """Follow a reloaded config: its budgets, forecast settings and webhooks."""
        self.config = config
        self.registry.set_config_rules(config.budgets.rules)
        self.sender.set_config(config.alerts)

    async def check(self) -> list[tuple[BudgetOutlook, LimitOutlook]]:
        """Forecast every budget that has a period end and alert those forecast to go over
        their limit. Returns the alerts sent by this call."""
        started = time.perf_counter()
        clock = Clock.at(self.clock())
        spends = [s for s in await budget_spends(self.registry, self.ledger) if s.period_end]
        result = await outlooks(
            self.redis,
            self.forecaster,
            clock,
            history_days=self.config.forecasts.history_days,
            teams=(),
            budgets=spends,
            spend=False,
        )
        alerting = [
            (outlook, limit)
            for outlook in result.budgets
            if (limit := self._alerting_limit(outlook)) is not None
        ]
        for team in {s.budget.team for s in spends}:
            count = sum(o.spend.budget.team == team for o, _ in alerting)
            self.metrics.forecast_over.labels(team).set(count)
        self.metrics.forecast_seconds.observe(time.perf_counter() - started)
        sent = []
        for outlook, limit in alerting:
            subject, text, fields = forecast_alert(outlook, limit)
            assert outlook.spend.period_end is not None  # filtered above
            hold = (outlook.spend.period_end - clock.now).total_seconds() + _HOLD_SLACK_S
            if await self.sender.send(BUDGET_FORECAST, subject, text, fields, hold_s=hold):
                sent.append((outlook, limit))
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Check every `forecasts.interval_s` (of the current config) until `stop` is set,
        taking turns with the other aggregator replicas; failures are logged and retried on
        the next turn."""
        while not stop.is_set():
            interval = self.config.forecasts.interval_s
            try:
                if await self._take_turn(interval):
                    await self.check()
            except (RedisError, OSError) as exc:
                log.warning("budget forecasts not checked (retrying next time): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def _alerting_limit(self, outlook: BudgetOutlook) -> LimitOutlook | None:
        """The first limit forecast to go over, if it may alert."""
        least = self.config.forecasts.alert_min_history_days
        for limit in outlook.limits:
            fitted = limit.fitted
            if limit.will_exceed and fitted.model is not None and fitted.history_days >= least:
                return limit
        return None

    async def _take_turn(self, interval_s: float) -> bool:
        """Whether this replica forecasts this interval (the lease expires with it)."""
        token = secrets.token_hex(8)
        lease_ms = max(1, int(interval_s * 1000))
        return bool(await self.redis.set(rediskeys.forecast_lease(), token, nx=True, px=lease_ms))
