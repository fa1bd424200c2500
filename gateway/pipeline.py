"""The request path, top to bottom: parse, authenticate, route, call upstream, account, respond.

`Pipeline.handle` is the whole of it for the four POST endpoints. Each request reads one config
snapshot (config + the providers built for it) at its start and keeps it to the end, so a reload
never changes the rules under a request in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.attribution import attribute
from gateway.config.model import Config, Deployment, ModelRoute
from gateway.errors import AuthenticationFailed, GatewayError, ModelNotFound, UpstreamError
from gateway.metrics import Metrics
from gateway.pricing.cost import cost_nano, usage_from_openai
from gateway.pricing.tokens import count_prompt, count_text
from gateway.providers.base import Provider, UpstreamCall, UpstreamStream
from gateway.routing.router import Router
from gateway.sse import StreamScanner, message_text
from gateway.store.keys import Keyring
from gateway.types import NANO_PER_USD, Principal, Usage, nano_to_usd_str
from gateway.validation import parse_body, validate_body

log = logging.getLogger("spendgate.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Endpoints whose streams can carry a usage chunk when asked with stream_options.
_USAGE_OPTION_ENDPOINTS = frozenset({"chat/completions", "completions"})
_CLIENT_GONE = (ConnectionResetError, aiohttp.ClientConnectionResetError)


@dataclass(slots=True)
class Record:
    """What one request did: the access log line and the metrics are written from it."""

    request_id: str
    endpoint: str
    started: float
    stream: bool = False
    status: int = 200
    outcome: str = "ok"
    principal: Principal | None = None
    model: str | None = None
    route: ModelRoute | None = None
    deployment: Deployment | None = None
    provider: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_nano: int = 0
    upstream_s: float = 0.0
    first_byte_s: float | None = None
    attempts: int = 0
    error: str | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        keyring: Keyring,
        router: Router,
        metrics: Metrics,
    ) -> None:
        self._snapshot = (config, providers)
        self.keyring = keyring
        self.router = router
        self.metrics = metrics

    def swap(self, config: Config, providers: Mapping[str, Provider]) -> None:
        """Install a new config snapshot; requests already running keep theirs."""
        self._snapshot = (config, providers)

    @property
    def config(self) -> Config:
        return self._snapshot[0]

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else ""
        secret = secret or request.headers.get("api-key", "")
        if not secret:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer sk-sg-...' with a spendgate key"
            )
        principal = await self.keyring.resolve(secret)
        if principal is None:
            raise AuthenticationFailed("invalid or revoked API key")
        return principal

    async def handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        config, providers = self._snapshot
        record = Record(_request_id(request), endpoint, time.perf_counter())
        self.metrics.inflight.inc()
        try:
            body = parse_body(await request.read(), config.server.max_body_bytes)
            validate_body(endpoint, body)
            record.principal = attribute(await self.authenticate(request), request.headers)
            record.model = body["model"]
            route = config.models.get(body["model"])
            if route is None:
                raise ModelNotFound(
                    f"model '{body['model']}' does not exist or is not served "
                    "by this gateway; GET /v1/models lists the models",
                    param="model",
                )
            record.route = route
            record.stream = body.get("stream") is True
            body = _with_token_cap(record.endpoint, body, config.server.default_max_tokens)
            if record.stream:
                return await self._stream(request, record, route, providers, body)
            return await self._send(record, route, providers, body)
        except GatewayError as exc:
            record.status, record.outcome, record.error = exc.status, "error", exc.code
            raise
        finally:
            self.metrics.inflight.dec()
            self._finish(record)

    async def _send(
        self,
        record: Record,
        route: ModelRoute,
        providers: Mapping[str, Provider],
        body: dict[str, Any],
    ) -> web.Response:
        upstream_started = time.perf_counter()
        result, deployment, record.attempts = await self.router.run(
            route,
            providers,
            lambda d, p: p.send(
                UpstreamCall(record.endpoint, {**body, "model": d.model}, False, record.request_id)
            ),
        )
        self.router.done(deployment)
        record.upstream_s = time.perf_counter() - upstream_started
        self._served_by(record, deployment, providers, result.ttfb_s)
        try:
            answer = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            answer = {}
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if isinstance(usage, dict):
            record.usage = usage_from_openai(usage)
        else:
            record.usage = _estimate(
                body,
                record.endpoint,
                deployment.model,
                message_text(answer) if isinstance(answer, dict) else "",
            )
        record.cost_nano = cost_nano(record.usage, deployment.price)
        return web.Response(
            body=result.body,
            content_type=None,
            headers={"Content-Type": result.content_type, **_headers(record, deployment)},
        )

    async def _stream(
        self,
        request: web.Request,
        record: Record,
        route: ModelRoute,
        providers: Mapping[str, Provider],
        body: dict[str, Any],
    ) -> web.StreamResponse:
        options = body.get("stream_options") or {}
        client_wants_usage = options.get("include_usage") is True
        if record.endpoint in _USAGE_OPTION_ENDPOINTS and not client_wants_usage:
            body = {**body, "stream_options": {**options, "include_usage": True}}
        hide_usage = record.endpoint in _USAGE_OPTION_ENDPOINTS and not client_wants_usage

        async def open_stream(d: Deployment, p: Provider) -> tuple[UpstreamStream, Any, bytes]:
            # Failing over is only possible before the client has seen a byte, so the first
            # chunk is awaited inside the attempt.
            upstream = await p.stream(
                UpstreamCall(record.endpoint, {**body, "model": d.model}, True, record.request_id)
            )
            chunks = aiter(upstream)
            try:
                first = await anext(chunks, b"")
            except BaseException:
                await upstream.aclose()
                raise
            return upstream, chunks, first

        upstream_started = time.perf_counter()
        (upstream, chunks, first), deployment, record.attempts = await self.router.run(
            route, providers, open_stream
        )
        record.upstream_s = time.perf_counter() - upstream_started
        self._served_by(record, deployment, providers, upstream.ttfb_s)
        scanner = StreamScanner(hide_usage_chunk=hide_usage)
        response = web.StreamResponse(
            headers={
                "Content-Type": upstream.content_type,
                "Cache-Control": "no-cache",
                **_headers(record, deployment, with_cost=False),
            }
        )
        accounted = False
        try:
            await response.prepare(request)
            await response.write(scanner.feed(first))
            record.first_byte_s = time.perf_counter() - record.started
            waited = time.perf_counter()
            async for chunk in chunks:
                record.upstream_s += time.perf_counter() - waited
                out = scanner.feed(chunk)
                if out:
                    await response.write(out)
                waited = time.perf_counter()
            await response.write(scanner.flush())
            self._account_stream(record, body, deployment, scanner)
            accounted = True
            # Cost is known only now; an SSE comment carries it to clients that want it.
            cost = nano_to_usd_str(record.cost_nano)
            await response.write(f": x-sg-cost-usd={cost}\n\n".encode())
            await response.write_eof()
        except _CLIENT_GONE:
            record.outcome, record.status = "client_disconnected", 499
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes away mid-stream.
            record.outcome, record.status = "client_disconnected", 499
            raise
        except UpstreamError as exc:
            record.outcome, record.error = "upstream_broken", exc.code
            # The status line is long gone; an error event is how OpenAI's SDKs learn of it.
            with contextlib.suppress(*_CLIENT_GONE):
                await response.write(b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n")
        finally:
            await upstream.aclose()
            self.router.done(deployment)
            if not accounted:
                # A client that left, or an upstream that broke, still pays what was generated.
                self._account_stream(record, body, deployment, scanner)
        return response

    def _account_stream(
        self,
        record: Record,
        body: dict[str, Any],
        deployment: Deployment,
        scanner: StreamScanner,
    ) -> None:
        if scanner.usage is not None:
            record.usage = usage_from_openai(scanner.usage)
        else:
            record.usage = _estimate(
                body, record.endpoint, deployment.model, scanner.generated_text()
            )
        record.cost_nano = cost_nano(record.usage, deployment.price)

    def _served_by(
        self,
        record: Record,
        deployment: Deployment,
        providers: Mapping[str, Provider],
        ttfb_s: float,
    ) -> None:
        record.deployment = deployment
        record.provider = providers[deployment.provider].config.name
        self.metrics.upstream_ttfb_seconds.labels(record.provider, deployment.model).observe(ttfb_s)

    def _finish(self, record: Record) -> None:
        elapsed = time.perf_counter() - record.started
        m = self.metrics
        model = record.route.name if record.route else "<unknown>"
        team = record.principal.team if record.principal else "<none>"
        m.requests.labels(
            record.endpoint, model, record.provider or "<none>", team, str(record.status)
        ).inc()
        m.request_seconds.labels(record.endpoint, model).observe(elapsed)
        overhead = record.first_byte_s if record.first_byte_s is not None else elapsed
        m.overhead_seconds.labels(record.endpoint).observe(max(0.0, overhead - record.upstream_s))
        u = record.usage
        if record.principal and record.route and (u.prompt_tokens or u.completion_tokens):
            for kind, count in (
                ("prompt", u.prompt_tokens),
                ("cached_prompt", u.cached_prompt_tokens),
                ("completion", u.completion_tokens),
                ("reasoning", u.reasoning_tokens),
            ):
                if count:
                    m.tokens.labels(team, model, kind).inc(count)
            m.cost_usd.labels(team, model).inc(record.cost_nano / NANO_PER_USD)
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"access": _access_fields(record, elapsed)})


def _request_id(request: web.Request) -> str:
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return "req_" + os.urandom(12).hex()


def _headers(record: Record, deployment: Deployment, with_cost: bool = True) -> dict[str, str]:
    headers = {"x-request-id": record.request_id, "x-sg-model": deployment.model}
    if with_cost:
        headers["x-sg-cost-usd"] = nano_to_usd_str(record.cost_nano)
    return headers


# The output cap each endpoint understands; chat's max_completion_tokens also bounds reasoning.
_CAP_FIELDS = {
    "chat/completions": ("max_completion_tokens", ("max_tokens", "max_completion_tokens")),
    "completions": ("max_tokens", ("max_tokens",)),
    "responses": ("max_output_tokens", ("max_output_tokens",)),
}


def _with_token_cap(endpoint: str, body: dict[str, Any], cap: int) -> dict[str, Any]:
    """Bound the output of a request that sets no limit, so its worst-case cost is known."""
    fields = _CAP_FIELDS.get(endpoint)
    if fields is None or any(body.get(name) is not None for name in fields[1]):
        return body
    return {**body, fields[0]: cap}


def _estimate(body: dict[str, Any], endpoint: str, model: str, generated: str) -> Usage:
    """Usage counted with tiktoken, for upstreams (or streams cut short) that report none."""
    return Usage(
        prompt_tokens=count_prompt(body, endpoint, model),
        completion_tokens=count_text(generated, model) if generated else 0,
        estimated=True,
    )


def _access_fields(record: Record, elapsed: float) -> dict[str, Any]:
    p, u = record.principal, record.usage
    return {
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "status": record.status,
        "outcome": record.outcome,
        "error": record.error,
        "stream": record.stream,
        "key_id": p.key_id if p else None,
        "team": p.team if p else None,
        "project": p.project if p else None,
        "environment": p.environment if p else None,
        "workload": p.workload if p else None,
        "model": record.model,
        "served_model": record.deployment.model if record.deployment else None,
        "deployment": record.deployment.id if record.deployment else None,
        "provider": record.provider,
        "attempts": record.attempts,
        "prompt_tokens": u.prompt_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "tokens_estimated": u.estimated,
        "cost_usd": nano_to_usd_str(record.cost_nano),
        "latency_ms": round(elapsed * 1000, 3),
        "upstream_ms": round(record.upstream_s * 1000, 3),
    }
