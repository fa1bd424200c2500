"""Attempts across a model's deployments: strategy order, circuit breakers, retries, backoff.

`Router.run` calls `attempt(deployment, provider)` until one succeeds or the retry budget is
spent; retryable failures (429, 5xx, connect errors, timeouts) move on to the next deployment in
the strategy's order. On success the caller owns the deployment's in-flight slot and must call
`done(deployment)` when the response is finished (for a stream, after its last byte).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from gateway.config.model import Deployment, ModelRoute, ProviderConfig
from gateway.errors import ServiceUnavailable, UpstreamError, UpstreamTimeout
from gateway.metrics import CIRCUIT_STATES, Metrics
from gateway.providers.base import Provider
from gateway.routing.health import HealthBoard
from gateway.routing.strategies import STRATEGIES

T = TypeVar("T")
_MAX_BACKOFF_S = 2.0


def _reason(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return str(exc.upstream_status) if exc.upstream_status else "connect"


class Router:
    def __init__(
        self,
        metrics: Metrics,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.metrics = metrics
        self.health = HealthBoard(on_change=self._circuit_changed)
        self._rng = rng or random.Random()
        self._sleep = sleep
        # Each deployment's last failure, so that "cooling down" can say why (one per
        # configured deployment: bounded).
        self._last_failure: dict[str, str] = {}

    def _circuit_changed(self, deployment_id: str, state: str) -> None:
        self.metrics.circuit_state.labels(deployment_id).set(CIRCUIT_STATES[state])

    def candidates(self, route: ModelRoute) -> list[Deployment]:
        order = STRATEGIES[route.strategy](route.deployments, self.health.inflight, self._rng)
        available = [d for d in order if self.health.is_available(d.id)]
        if not available:
            wait = self.health.retry_after_s([d.id for d in route.deployments])
            why = next(
                (self._last_failure[d.id] for d in order if d.id in self._last_failure), None
            )
            raise ServiceUnavailable(
                f"every deployment of model '{route.name}' failed recently and is cooling down"
                + (f" (last failure: {why})" if why else ""),
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return available

    async def run(
        self,
        route: ModelRoute,
        providers: Mapping[str, Provider],
        attempt: Callable[[Deployment, Provider], Awaitable[T]],
    ) -> tuple[T, Deployment, int]:
        """Return (result, deployment that produced it, attempts made)."""
        candidates = self.candidates(route)
        last_error: UpstreamError | None = None
        attempts = 0
        for i in range(route.retries + 1):
            deployment = candidates[i % len(candidates)]
            if not self.health.acquire(deployment.id):
                continue  # its circuit opened while we were trying others
            if attempts:
                self.metrics.retries.labels(route.name).inc()
                backoff = route.backoff_s * (2 ** (attempts - 1))
                await self._sleep(min(_MAX_BACKOFF_S, backoff * (0.5 + self._rng.random())))
            attempts += 1
            provider = providers[deployment.provider]
            breaker = provider.config.circuit_breaker
            try:
                result = await attempt(deployment, provider)
            except UpstreamError as exc:
                self.health.done(deployment.id)
                self._failed(provider.config, deployment, exc)
                # A 4xx is the request's fault, not the deployment's: it counts as alive.
                self.health.record(deployment.id, not exc.retryable, breaker)
                if not exc.retryable:
                    raise
                last_error = exc
                continue
            except BaseException:
                self.health.done(deployment.id)
                raise
            self.health.record(deployment.id, True, breaker)
            return result, deployment, attempts
        if last_error is not None:
            raise last_error
        raise ServiceUnavailable(f"every deployment of model '{route.name}' is cooling down")

    def _failed(self, provider: ProviderConfig, deployment: Deployment, exc: UpstreamError) -> None:
        self.metrics.upstream_errors.labels(provider.name, deployment.id, _reason(exc)).inc()
        if exc.retryable:  # a failure of the deployment, not of the request
            self._last_failure[deployment.id] = exc.message

    def done(self, deployment: Deployment) -> None:
        self.health.done(deployment.id)
