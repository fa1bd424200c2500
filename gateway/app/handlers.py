"""HTTP handlers: the OpenAI-compatible /v1 endpoints and the ops endpoints.

The /v1 POST handlers are one line each: the request path lives in `gateway.pipeline`.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from gateway.app.state import METRICS, PIPELINE, REDIS


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "embeddings")


async def responses(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request, "responses")


async def models(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    await pipeline.authenticate(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": route.owned_by}
        for name, route in pipeline.config.models.items()
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers; the config is loaded before the app exists."""
    try:
        await request.app[REDIS].ping()
    except (RedisError, OSError) as exc:
        return web.json_response({"status": "unavailable", "store": type(exc).__name__}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def v1_routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.post("/v1/completions", completions),
        web.post("/v1/embeddings", embeddings),
        web.post("/v1/responses", responses),
        web.get("/v1/models", models),
    ]


def ops_routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
    ]
