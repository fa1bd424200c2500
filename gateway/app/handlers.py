"""HTTP handlers: the OpenAI-compatible /v1 endpoints and the ops endpoints.

The /v1 POST handlers are one line each: the request path lives in `gateway.pipeline`.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from gateway.aggregator.child import fetch_metrics
from gateway.app.state import AGGREGATOR_METRICS, LIVE_CONFIG, METRICS, PIPELINE, REDIS
from gateway.config.model import Config
from gateway.errors import ModelNotFound

# Below a probe's usual timeout (Kubernetes: 1 s), so the probe gets an answer, not a timeout.
READY_TIMEOUT_S = 0.5


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "embeddings")


async def responses(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "responses")


def _model_objects(config: Config) -> dict[str, dict[str, object]]:
    """What /v1/models lists, in OpenAI's model object shape: the exposed models, then the
    tiers (clients send `auto` as a model), each name once."""
    listed: dict[str, dict[str, object]] = {}
    owners = [(name, route.owned_by) for name, route in config.models.items()]
    for name, owner in [*owners, *((name, "spendgate") for name in config.tiers)]:
        listed.setdefault(name, {"id": name, "object": "model", "created": 0, "owned_by": owner})
    return listed


async def models(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    await pipeline.authenticate(request)
    data = list(_model_objects(pipeline.config).values())
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def model(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    await pipeline.authenticate(request)
    name = request.match_info["model"]
    found = _model_objects(pipeline.config).get(name)
    if found is None:
        raise ModelNotFound(
            f"model '{name}' does not exist or is not served by this gateway; GET /v1/models "
            "lists the models",
            param="model",
        )
    return web.Response(body=orjson.dumps(found), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers; the config is loaded before the app exists.

    With `store.on_unavailable: open` the gateway serves through a store outage (spend goes to
    the spool), so an unreachable store only degrades it: answering 503 would take every
    replica out of its load balancer at once and turn a Redis outage into a total one."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):  # a hung store must not hang the probe
            await request.app[REDIS].ping()
    except (RedisError, OSError, TimeoutError) as exc:
        body = {"status": "unavailable", "store": type(exc).__name__}
        if request.app[LIVE_CONFIG].current.store.on_unavailable == "closed":
            return web.json_response(body, status=503)
        return web.json_response({**body, "status": "degraded"})
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    child = request.app.get(AGGREGATOR_METRICS)
    extra = await fetch_metrics(child) if child is not None else b""
    body = request.app[METRICS].exposition(extra)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def v1_routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
        web.post("/v1/responses", responses),
        web.get("/v1/models", models),
        web.get("/v1/models/{model:.+}", model),  # names may contain "/"
    ]


def ops_routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
    ]
