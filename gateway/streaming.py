"""The streaming response: an upstream SSE stream passed through to the client as it arrives
(`StreamRelay`), and a whole answer replayed as SSE (`send_sse`). What a stream generated is
billed even when the client leaves or the upstream breaks mid-way; the cost and the budget left
after it, known only at the end, go out as an SSE comment. The pipeline hands the relay its plan
and headers and gets back the finished answer to cache; nothing here calls back into the
pipeline. A graceful stop that reaches its deadline (`Cutoff`) ends the streams still open with
an error event, billed like any stream cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.accounting import Record
from gateway.budgets.messages import remaining_headers
from gateway.cache.replay import chunks_to_completion, completion_to_chunks
from gateway.config.model import Deployment
from gateway.errors import GatewayError, ShuttingDown, UpstreamError
from gateway.metrics import Metrics
from gateway.plan import Plan
from gateway.pricing.cost import usage_from_openai
from gateway.pricing.tokens import estimate_usage
from gateway.providers.base import Provider, UpstreamCall, UpstreamStream
from gateway.routing.router import Router
from gateway.sse import StreamScanner
from gateway.types import Usage, nano_to_usd_str

# Endpoints whose streams can carry a usage chunk when asked with stream_options.
_USAGE_OPTION_ENDPOINTS = frozenset({"chat/completions", "completions"})
_CLIENT_GONE = (ConnectionResetError, aiohttp.ClientConnectionResetError)


class Cutoff:
    """The requests this process is serving, and the end of a graceful stop's drain: past it
    (`cut`), each one still running is cancelled, and the cancellation is recognised as the
    cut-off (`owns`) rather than a client that went away. A stream then ends with an error
    event; another request answers 503 (OpenAI's SDKs retry it, on another replica)."""

    __slots__ = ("_idle", "reached", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.reached = False
        self._idle: asyncio.Event | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        self.tasks.discard(task)
        if not self.tasks and self._idle is not None:
            self._idle.set()

    async def idle(self, timeout_s: float) -> bool:
        """Until no request is in flight, at most `timeout_s`; whether none is."""
        if self.tasks:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        return not self.tasks

    def cut(self) -> int:
        """Cancel every request still in flight; how many there were."""
        self.reached = True
        for task in self.tasks:
            task.cancel()
        return len(self.tasks)

    def owns(self) -> bool:
        """In an `except CancelledError` of a request: True (and the cancellation withdrawn)
        when it is the cut-off's, so the request can still say why it ends."""
        task = asyncio.current_task()
        if not self.reached or task is None or task not in self.tasks or not task.cancelling():
            return False
        task.uncancel()
        return True


class StreamRelay:
    """Streams upstream answers through to clients, on the pipeline's router and metrics."""

    __slots__ = ("cutoff", "metrics", "router")

    def __init__(self, router: Router, metrics: Metrics, cutoff: Cutoff) -> None:
        self.router = router
        self.metrics = metrics
        self.cutoff = cutoff

    async def relay(
        self,
        request: web.Request,
        record: Record,
        plan: Plan,
        providers: Mapping[str, Provider],
        headers: dict[str, str],
    ) -> tuple[web.StreamResponse, dict[str, Any] | None]:
        """Pass the upstream's stream through to the client as it arrives, watching it for
        usage, and bill it. `headers` are the x-sg-* headers (the served model is added here).
        Returns the response and, for a cacheable plan whose stream finished cleanly, the
        whole answer it amounted to (a chat completion), for the caller to cache."""
        body = plan.body
        options = body.get("stream_options") or {}
        client_wants_usage = options.get("include_usage") is True
        hide_usage = record.endpoint in _USAGE_OPTION_ENDPOINTS and not client_wants_usage
        if hide_usage:
            body = {**body, "stream_options": {**options, "include_usage": True}}

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

        started = time.perf_counter()
        (upstream, chunks, first), deployment, record.attempts = await self.router.run(
            plan.route, providers, open_stream
        )
        record.upstream_s = time.perf_counter() - started
        provider = providers[deployment.provider].config.name
        metrics = self.metrics
        metrics.child(metrics.upstream_ttfb_seconds, provider, deployment.model).observe(
            upstream.ttfb_s
        )
        scanner = StreamScanner(hide_usage_chunk=hide_usage)
        response = web.StreamResponse(
            headers={
                "Content-Type": upstream.content_type,
                "Cache-Control": "no-cache",
                **headers,
                "x-sg-model": deployment.model,
            }
        )
        charged = False
        completion = None
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
            record.charge(
                deployment,
                provider,
                _stream_usage(scanner, body, record, deployment),
                plan.list_price,
            )
            charged = True
            if plan.cache_key is not None:
                # None when the events do not make a whole answer: nothing to cache then.
                completion = chunks_to_completion(scanner.events)
            await response.write(closing_comment(record))
            await response.write_eof()
        except _CLIENT_GONE:
            record.outcome, record.status = "client_disconnected", 499
        except asyncio.CancelledError:
            if not self.cutoff.owns():
                # aiohttp cancels the handler when the client goes away mid-stream.
                record.outcome, record.status = "client_disconnected", 499
                raise
            cut = ShuttingDown(
                "the gateway is shutting down and this stream outlasted its drain time; "
                "what was generated is billed"
            )
            record.outcome, record.error = "drain_deadline", cut.code
            await _end_with_error(response, cut)
        except UpstreamError as exc:
            record.outcome, record.error = "upstream_broken", exc.code
            # The status line is long gone; an error event is how OpenAI's SDKs learn of it.
            await _end_with_error(response, exc)
        finally:
            await upstream.aclose()
            self.router.done(deployment)
            if not charged:
                # A client that left, or an upstream that broke, still pays what was generated.
                record.charge(
                    deployment,
                    provider,
                    _stream_usage(scanner, body, record, deployment),
                    plan.list_price,
                )
        return response, completion


async def _end_with_error(response: web.StreamResponse, error: GatewayError) -> None:
    """End a stream whose status line is long gone with an OpenAI error event: that is how
    OpenAI's SDKs learn of a failure mid-stream."""
    with contextlib.suppress(*_CLIENT_GONE):
        await response.write(b"data: " + orjson.dumps(error.to_dict()) + b"\n\n")


async def send_sse(
    request: web.Request,
    headers: dict[str, str],
    completion: Mapping[str, Any],
    body: Mapping[str, Any],
    record: Record,
) -> web.StreamResponse:
    """Send a whole answer as an SSE stream (a cache hit, or a cascaded stream), with the usage
    chunk only if the client asked for it."""
    options = body.get("stream_options") or {}
    chunks = completion_to_chunks(completion, options.get("include_usage") is True)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    await response.write(b"".join(chunks))
    await response.write(closing_comment(record))
    await response.write_eof()
    return response


def closing_comment(record: Record) -> bytes:
    """The SSE comment that ends a stream: what the request cost and what its tightest budget
    has left after it, known only now (SDKs ignore comments)."""
    lines = [f": x-sg-cost-usd={nano_to_usd_str(record.cost_nano)}\n"]
    if record.reservation is not None:
        left = remaining_headers(record.reservation, (record.cost_nano, record.tokens))
        lines += [f": {name}={value}\n" for name, value in left.items()]
    lines.append("\n")
    return "".join(lines).encode()


def _stream_usage(
    scanner: StreamScanner, body: dict[str, Any], record: Record, deployment: Deployment
) -> Usage:
    if scanner.usage is not None:
        return usage_from_openai(scanner.usage)
    return estimate_usage(body, record.endpoint, deployment.model, scanner.generated_text())
