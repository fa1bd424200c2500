"""Providers that are not OpenAI-compatible (Anthropic, Bedrock, Vertex, ...) via litellm.

litellm translates an OpenAI-shaped request to the provider's API and the answer back; we turn
its result into OpenAI JSON bytes (or SSE events) so the pipeline sees one shape. litellm is
imported when the first such provider is built, never for OpenAI-compatible traffic.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.config.model import ProviderConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers.base import RETRYABLE_STATUSES, UpstreamCall, UpstreamResponse

# Retries and fallbacks are the router's job; litellm must make exactly one attempt.
_FIXED_KWARGS: dict[str, Any] = {"num_retries": 0, "max_retries": 0}


def _to_json(obj: Any) -> bytes:
    dump = getattr(obj, "model_dump", None)
    return orjson.dumps(dump(exclude_none=False) if dump else obj, default=str)


def _error(provider: str, exc: Exception) -> UpstreamError:
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError) or "Timeout" in name:
        return UpstreamTimeout(f"upstream {provider} timed out")
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(status, int) and status >= 400:
        return UpstreamError(
            f"upstream {provider} answered {status}: {message}",
            upstream_status=status,
            retryable=status in RETRYABLE_STATUSES,
        )
    return UpstreamError(f"upstream {provider} failed: {name}: {message}")


class LiteLLMStream:
    def __init__(self, provider: str, chunks: Any, ttfb_s: float) -> None:
        self._provider = provider
        self._chunks = chunks
        self.status = 200
        self.content_type = "text/event-stream"
        self.ttfb_s = ttfb_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                yield b"data: " + _to_json(chunk) + b"\n\n"
        except Exception as exc:  # litellm raises its own tree; it becomes ours here
            raise _error(self._provider, exc) from exc
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


class LiteLLMProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        # Prices are ours (from the same bundled table); litellm must not fetch its map online.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        self._litellm: Any = importlib.import_module("litellm")
        self._kwargs: dict[str, Any] = {
            **_FIXED_KWARGS,
            "api_base": config.base_url,
            "timeout": config.timeouts.total_s,
        }
        if config.api_key:
            self._kwargs["api_key"] = config.api_key
        if config.headers:
            self._kwargs["extra_headers"] = dict(config.headers)

    def _request(self, call: UpstreamCall) -> dict[str, Any]:
        body = dict(call.body)
        body["model"] = f"{self.config.litellm_provider}/{body['model']}"
        return {**body, **self._kwargs}

    async def _invoke(self, call: UpstreamCall) -> Any:
        request = self._request(call)
        if call.endpoint == "chat/completions":
            return await self._litellm.acompletion(**request)
        if call.endpoint == "embeddings":
            request.pop("stream", None)
            return await self._litellm.aembedding(**request)
        if call.endpoint == "completions":
            return await self._litellm.atext_completion(**request)
        raise UpstreamError(
            f"provider {self.config.name} ({self.config.litellm_provider}) does not serve "
            f"/v1/{call.endpoint}",
            upstream_status=400,
            retryable=False,
        )

    async def _call(self, call: UpstreamCall) -> tuple[Any, float]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.timeouts.first_byte_s):
                result = await self._invoke(call)
        except UpstreamError:
            raise
        except Exception as exc:  # litellm raises its own tree; it becomes ours here
            raise _error(self.config.name, exc) from exc
        return result, time.perf_counter() - started

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        result, ttfb = await self._call(call)
        return UpstreamResponse(200, _to_json(result), "application/json", ttfb)

    async def stream(self, call: UpstreamCall) -> LiteLLMStream:
        chunks, ttfb = await self._call(call)
        return LiteLLMStream(self.config.name, chunks, ttfb)

    async def aclose(self) -> None:
        """litellm's clients are its own; nothing of ours to close."""
