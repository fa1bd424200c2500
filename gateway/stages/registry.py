"""The stages the request path runs, in order. A new stage is one module and one line here.

`before` runs in this order (the plan exists from `Routing` on: stages that need the model,
the output cap or the cache key come after it); `answer` is asked in this order too, and the
first stage that answers serves the request.
"""

from __future__ import annotations

from gateway.stages.base import Services, Stage
from gateway.stages.batching import Batching
from gateway.stages.budgets import Budgets
from gateway.stages.cache import Cache
from gateway.stages.cascade import Cascade
from gateway.stages.coalescing import Coalescing
from gateway.stages.policies import Policies
from gateway.stages.ratelimits import RateLimits
from gateway.stages.routing import Routing
from gateway.stages.tiers import Tiers

STAGES: tuple[type[Stage], ...] = (
    Tiers,  # a tier name -> the model its rules pick
    Routing,  # the plan: model, caps, output cap
    Policies,  # governance: model blocks, required tags, approvals above a size
    RateLimits,  # requests and tokens per minute (429), x-ratelimit-* headers
    Cache,  # a hit answers here; a miss's answer is kept after
    Budgets,  # hold the worst case (refuse, or downgrade the plan)
    Cascade,  # answer: cheapest candidate first, escalating
    Batching,  # answer: embeddings merged into one call
    Coalescing,  # answer: identical requests in flight share one call
)


def build(services: Services) -> list[Stage]:
    return [kind(services) for kind in STAGES]
