"""Alert delivery: a WARNING log line, a metric, and a Slack-compatible POST to each webhook.

Budget thresholds are already once per period (the settle script's alerted sets); the cooldown
here (SET NX EX, shared by replicas, with an in-process copy for when Redis is away) stops storms
such as a `budget_exceeded` per refused request. An alert that must go once per period
(`budget_forecast`) holds its claim until the period ends (`hold_s`). Sending never raises, and
never logs a webhook URL: those carry tokens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.budgets.ledger import BudgetStatus, Reservation
from gateway.budgets.messages import describe_scope, exceeded_error, format_usd
from gateway.config.model import AlertsConfig, BudgetConfig, Webhook

if TYPE_CHECKING:
    from prometheus_client import Counter
    from redis.asyncio import Redis

log = logging.getLogger("spendgate.alerts")

BUDGET_THRESHOLD = "budget_threshold"
BUDGET_EXCEEDED = "budget_exceeded"
BUDGET_FORECAST = "budget_forecast"  # sent by the aggregator (aggregator/forecast_alert.py)

_COLORS = {BUDGET_THRESHOLD: "warning", BUDGET_EXCEEDED: "danger", BUDGET_FORECAST: "warning"}
_LOCAL_MAX = 10_000


class AlertSender:
    """`metrics_counter`, if given, is a Counter with labels (kind, outcome); outcome is "sent",
    "suppressed" (cooldown) or "webhook_failed" (one per failed delivery)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        redis: Redis,
        config: AlertsConfig,
        metrics_counter: Counter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._redis = redis
        self._config = config
        self._counter = metrics_counter
        self._clock = clock
        self._recent: dict[tuple[str, str], float] = {}  # (kind, subject) -> cooldown end
        self._claiming: set[tuple[str, str]] = set()  # claims in flight in the store

    def set_config(self, config: AlertsConfig) -> None:
        self._config = config

    async def send(
        self,
        kind: str,
        subject: str,
        text: str,
        fields: Mapping[str, object],
        *,
        hold_s: float = 0.0,
        color: str | None = None,
    ) -> bool:
        """Raise an alert unless the same (kind, subject) was raised within the cooldown, or
        within `hold_s` seconds if that is longer (an alert once per period holds its claim to
        the period's end). True if it was raised (logged, counted, posted); webhook failures
        are only logged. `color`: the Slack attachment's (default: by kind)."""
        if not await self._claim(kind, subject, hold_s):
            self._count(kind, "suppressed")
            return False
        log.warning("alert %s: %s", kind, text)
        self._count(kind, "sent")
        hooks = [hook for hook in self._config.webhooks if kind in hook.events]
        if hooks:
            body = _slack_body(kind, text, fields, color or _COLORS.get(kind, "warning"))
            await asyncio.gather(*(self._post(hook, kind, body) for hook in hooks))
        return True

    async def budget_threshold(
        self, budget: BudgetConfig, threshold: int, status: BudgetStatus
    ) -> bool:
        """A budget reached `threshold` percent in its current period."""
        text = (
            f"Budget '{budget.name}' ({describe_scope(budget)}) reached {threshold}% of its "
            f"{budget.period} limit in period {status.period_id}"
        )
        return await self.send(
            BUDGET_THRESHOLD,
            f"{budget.team}:{budget.name}:{status.period_id}:{threshold}",
            text,
            _status_fields(status, threshold=threshold),
        )

    async def budget_exceeded(self, reservation: Reservation) -> bool:
        """A request was refused (or downgraded) by a budget."""
        status = reservation.exceeded_status
        if status is None:
            return False
        budget = status.budget
        return await self.send(
            BUDGET_EXCEEDED,
            f"{budget.team}:{budget.name}:{status.period_id}",
            exceeded_error(reservation).message,
            _status_fields(status, on_exceed=budget.on_exceed),
        )

    async def _claim(self, kind: str, subject: str, hold_s: float) -> bool:
        now = self._clock()
        if self._recent.get((kind, subject), 0.0) > now:
            return False
        cooldown = max(self._config.cooldown_s, hold_s)
        if cooldown > 0:
            # One claim at a time per alert: whatever it finds, the same alert raised meanwhile
            # (a burst of refusals by one budget) falls in the same cooldown.
            if (kind, subject) in self._claiming:
                return False
            self._claiming.add((kind, subject))
            try:
                first = await self._redis.set(
                    rediskeys.alert_cooldown(kind, subject),
                    "1",
                    nx=True,
                    ex=max(1, math.ceil(cooldown)),
                )
            except (RedisError, OSError) as exc:
                # Without Redis each replica keeps its own cooldown: a few duplicates at most.
                log.info("alert cooldown not shared (%s); using this process's only", exc)
            else:
                if not first:
                    return False  # another replica sent it
            finally:
                self._claiming.discard((kind, subject))
            self._remember(kind, subject, now + cooldown)
        return True

    def _remember(self, kind: str, subject: str, until: float) -> None:
        if len(self._recent) >= _LOCAL_MAX:
            now = self._clock()
            self._recent = {k: v for k, v in self._recent.items() if v > now}
            if len(self._recent) >= _LOCAL_MAX:
                self._recent.clear()
        self._recent[(kind, subject)] = until

    async def _post(self, hook: Webhook, kind: str, body: dict[str, object]) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        try:
            async with self._session.post(hook.url, json=body, timeout=timeout) as resp:
                if resp.status < 300:
                    return
                reason = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # The exception text may quote the URL (and its token): log only its class.
            reason = type(exc).__name__
        log.error("alert %s not delivered to webhook %r: %s", kind, hook.name, reason)
        self._count(kind, "webhook_failed")

    def _count(self, kind: str, outcome: str) -> None:
        if self._counter is not None:
            self._counter.labels(kind=kind, outcome=outcome).inc()


def _status_fields(status: BudgetStatus, **extra: object) -> dict[str, object]:
    budget = status.budget
    fields: dict[str, object] = {
        "budget": budget.name,
        "team": budget.team,
        "scope": f"{budget.scope} {budget.match}" if budget.match else budget.scope,
        "period": f"{budget.period} ({status.period_id})",
    }
    if budget.limit_nano is not None:
        fields["limit_usd"] = format_usd(budget.limit_nano)
        fields["spent_usd"] = format_usd(status.spent_nano)
    if budget.limit_tokens is not None:
        fields["limit_tokens"] = budget.limit_tokens
        fields["spent_tokens"] = status.spent_tokens
    fields["pct"] = f"{status.pct:.1f}"
    if status.period_end is not None:
        fields["resets_at"] = f"{status.period_end:%Y-%m-%dT%H:%M:%SZ}"
    fields.update(extra)
    return fields


def _slack_body(
    kind: str, text: str, fields: Mapping[str, object], color: str
) -> dict[str, object]:
    return {
        "text": f"[spendgate] {text}",
        "attachments": [
            {
                "color": color,
                "fields": [
                    {"title": name, "value": str(value), "short": True}
                    for name, value in fields.items()
                ],
                "footer": f"spendgate {kind}",
            }
        ],
    }
