"""Deployment selection strategies: pure functions over (deployments, in-flight counts, rng).

Each returns every deployment in the order to try them: the first is the pick, the rest are the
fallbacks. The router filters out open circuits; strategies know nothing of health beyond load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.config.model import Deployment

Strategy = Callable[[Sequence[Deployment], Callable[[str], int], random.Random], list[Deployment]]


def weighted(
    deployments: Sequence[Deployment], inflight: Callable[[str], int], rng: random.Random
) -> list[Deployment]:
    """Pick by weight; fall back to the others, heaviest first."""
    if len(deployments) == 1:
        return [deployments[0]]
    pick = rng.choices(deployments, weights=[d.weight for d in deployments])[0]
    rest = sorted((d for d in deployments if d is not pick), key=lambda d: -d.weight)
    return [pick, *rest]


def ordered(
    deployments: Sequence[Deployment], inflight: Callable[[str], int], rng: random.Random
) -> list[Deployment]:
    """As declared: a primary and its fallbacks."""
    return list(deployments)


def least_busy(
    deployments: Sequence[Deployment], inflight: Callable[[str], int], rng: random.Random
) -> list[Deployment]:
    """Fewest requests in flight first (relative to weight); ties keep declaration order."""
    return sorted(deployments, key=lambda d: inflight(d.id) / d.weight)


def cheapest(
    deployments: Sequence[Deployment], inflight: Callable[[str], int], rng: random.Random
) -> list[Deployment]:
    """Lowest list price first (input + output per 1M tokens)."""
    return sorted(deployments, key=lambda d: d.price.input_per_m + d.price.output_per_m)


STRATEGIES: dict[str, Strategy] = {
    "weighted": weighted,
    "ordered": ordered,
    "least-busy": least_busy,
    "cheapest": cheapest,
}
