"""Per-deployment health: a circuit breaker and an in-flight count, in this process only.

Closed -> open after `failure_threshold` consecutive failures; open for `cooldown_s`; then
half-open: one trial request is let through, whose outcome closes or re-opens the circuit.
State survives config reloads (it is keyed by deployment id) and is never shared across replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.model import CircuitBreakerConfig

CircuitListener = Callable[[str, str], None]  # (deployment id, state name)


@dataclass(slots=True)
class DeploymentHealth:
    failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False
    inflight: int = 0
    state: str = "closed"


class HealthBoard:
    def __init__(
        self,
        on_change: CircuitListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health: dict[str, DeploymentHealth] = {}
        self._on_change = on_change
        self._clock = clock

    def get(self, deployment_id: str) -> DeploymentHealth:
        health = self._health.get(deployment_id)
        if health is None:
            health = self._health[deployment_id] = DeploymentHealth()
        return health

    def _set_state(self, deployment_id: str, health: DeploymentHealth, state: str) -> None:
        if health.state != state:
            health.state = state
            if self._on_change is not None:
                self._on_change(deployment_id, state)

    def acquire(self, deployment_id: str) -> bool:
        """May a request go to this deployment now? Counts it in flight when it may."""
        health = self.get(deployment_id)
        if health.state == "open":
            if self._clock() < health.open_until or health.trial_in_flight:
                return False
            self._set_state(deployment_id, health, "half_open")
            health.trial_in_flight = True
        elif health.state == "half_open":
            if health.trial_in_flight:
                return False
            health.trial_in_flight = True
        health.inflight += 1
        return True

    def done(self, deployment_id: str) -> None:
        """The request `acquire` let through has finished (a stream: its last byte)."""
        self.get(deployment_id).inflight -= 1

    def record(self, deployment_id: str, ok: bool, config: CircuitBreakerConfig) -> None:
        """Record whether the deployment answered (a stream: its first byte arrived)."""
        health = self.get(deployment_id)
        health.trial_in_flight = False
        if ok:
            health.failures = 0
            self._set_state(deployment_id, health, "closed")
            return
        health.failures += 1
        if health.state == "half_open" or health.failures >= config.failure_threshold:
            health.open_until = self._clock() + config.cooldown_s
            self._set_state(deployment_id, health, "open")

    def is_available(self, deployment_id: str) -> bool:
        health = self._health.get(deployment_id)
        if health is None or health.state == "closed":
            return True
        return health.state == "open" and self._clock() >= health.open_until

    def retry_after_s(self, deployment_ids: list[str]) -> float:
        """Seconds until the first of these circuits lets a trial through."""
        now = self._clock()
        waits = [max(0.0, self.get(d).open_until - now) for d in deployment_ids]
        return min(waits, default=0.0)

    def inflight(self, deployment_id: str) -> int:
        health = self._health.get(deployment_id)
        return health.inflight if health else 0
