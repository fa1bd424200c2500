"""Embeddings micro-batching: concurrent embedding requests share one upstream call; each pays
its own tokens."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.accounting import Record
from gateway.batching.embeddings import EmbeddingBatcher, group_key
from gateway.config.model import Config, Deployment
from gateway.stages.base import Context, Services, Stage
from gateway.stages.upstream import Answer
from gateway.types import Usage


class Batching(Stage):
    name = "batching"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        config, _ = services.snapshot()
        self.batcher: EmbeddingBatcher[tuple[Deployment, str]] = EmbeddingBatcher(
            config.batching.embeddings_window_s,
            config.batching.embeddings_max_inputs,
            self._embed_batch,
            metrics=services.metrics,
        )

    def swap(self, config: Config) -> None:
        self.batcher.window_s = config.batching.embeddings_window_s
        self.batcher.max_inputs = max(1, config.batching.embeddings_max_inputs)

    async def aclose(self) -> None:
        await self.batcher.aclose()

    async def answer(self, ctx: Context) -> Answer | None:
        record, plan = ctx.record, ctx.plan
        if (
            record.endpoint != "embeddings"
            or record.stream
            or not ctx.config.batching.embeddings_enabled
        ):
            return None
        share = await self.batcher.submit(group_key(plan.body), plan.body)
        deployment, provider = share.meta
        if share.batch_requests > 1:
            self.services.metrics.embedding_batch_requests.labels(plan.route.name).observe(
                share.batch_requests
            )
        usage = Usage(prompt_tokens=share.usage_share, estimated=share.estimated)
        record.charge(
            deployment,
            provider,
            usage,
            plan.list_price,
            optimization="batching" if share.batch_requests > 1 else None,
        )
        return Answer(
            orjson.dumps(share.response),
            "application/json",
            share.response,
            deployment,
            provider,
            usage,
        )

    async def _embed_batch(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], tuple[Deployment, str]]:
        """The batcher's upstream call: one (merged) embeddings request on today's config."""
        config, providers = self.services.snapshot()
        record = Record(self.services.new_request_id(), "embeddings", time.perf_counter())
        answer = await self.services.upstream.call(
            record, config.models[body["model"]], providers, body
        )
        return answer.json, (answer.deployment, answer.provider)
