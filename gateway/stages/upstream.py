"""One whole (non-streaming) upstream call through the router, as an `Answer`: what the
pipeline's plain call and the stages that call the upstream their own way (cascade, batching,
coalescing) share."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.accounting import Record
from gateway.config.model import Deployment, ModelRoute
from gateway.metrics import Metrics
from gateway.pricing.cost import usage_from_openai
from gateway.pricing.tokens import estimate_usage
from gateway.providers.base import Provider, UpstreamCall
from gateway.routing.router import Router
from gateway.sse import message_text
from gateway.types import Usage


@dataclass(slots=True)
class Answer:
    """A whole (non-streaming) upstream answer."""

    body: bytes
    content_type: str
    json: dict[str, Any]
    deployment: Deployment
    provider: str
    usage: Usage


class Upstream:
    def __init__(self, router: Router, metrics: Metrics) -> None:
        self.router = router
        self.metrics = metrics

    async def call(
        self,
        record: Record,
        route: ModelRoute,
        providers: Mapping[str, Provider],
        body: dict[str, Any],
    ) -> Answer:
        """One non-streaming upstream call through the router (retries, fallbacks)."""
        started = time.perf_counter()
        result, deployment, attempts = await self.router.run(
            route,
            providers,
            lambda d, p: p.send(
                UpstreamCall(record.endpoint, {**body, "model": d.model}, False, record.request_id)
            ),
        )
        self.router.done(deployment)
        record.attempts += attempts
        record.upstream_s += time.perf_counter() - started
        provider = providers[deployment.provider].config.name
        self.metrics.child(self.metrics.upstream_ttfb_seconds, provider, deployment.model).observe(
            result.ttfb_s
        )
        try:
            answer = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        usage = answer.get("usage")
        if isinstance(usage, dict):
            counted = usage_from_openai(usage)
        else:
            counted = estimate_usage(body, record.endpoint, deployment.model, message_text(answer))
        return Answer(result.body, result.content_type, answer, deployment, provider, counted)
