"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, vLLM, Ollama, Together, Groq, ...).

They differ only by base URL, auth header and extra headers, so one class serves all of them
over the app's upstream client (http1.py). Bodies go out as JSON and come back as raw bytes:
nothing is re-encoded on the way back, streams included.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator

import orjson

from gateway.config.model import ProviderConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers.base import RETRYABLE_STATUSES, UpstreamCall, UpstreamResponse
from gateway.providers.http1 import Endpoint, Http1Client, Http1Error, Response, Timeouts


def _auth_headers(config: ProviderConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if config.api_key and config.auth == "bearer":
        headers["Authorization"] = f"Bearer {config.api_key}"
    elif config.api_key and config.auth == "api-key":
        headers["api-key"] = config.api_key
    headers.update(config.headers)
    return headers


def error_from_status(provider: str, status: int, body: bytes) -> UpstreamError:
    """Build our error from an upstream's non-2xx answer, keeping its message (secrets cut)."""
    message = body[:2000].decode("utf-8", "replace").strip()
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = str(parsed["error"].get("message") or message)
        elif isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            message = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    return UpstreamError(
        f"upstream {provider} answered {status}: {message or 'no message'}",
        upstream_status=status,
        retryable=status in RETRYABLE_STATUSES,
        body=body,
    )


def connect_failure(exc: OSError) -> str:
    """The system's words for why a connection failed ("Connection refused"), whichever event
    loop made it (asyncio's says "Connect call failed ('127.0.0.1', 9911)" instead)."""
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def transport_error(provider: str, exc: BaseException, hint: str | None = None) -> UpstreamError:
    """`hint`: what to do when the upstream cannot be connected to (see factory.connect_hint)."""
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout(f"upstream {provider} timed out")
    if isinstance(exc, Http1Error):
        return UpstreamError(f"upstream {provider} connection failed: {exc}")
    if isinstance(exc, OSError):
        message = f"cannot connect to upstream {provider}: {connect_failure(exc)}"
        return UpstreamError(f"{message}. {hint}" if hint else message)
    return UpstreamError(f"upstream {provider} connection failed: {type(exc).__name__}: {exc}")


class OpenAIStream:
    """An open upstream SSE response; iterating yields its bytes as they arrive."""

    def __init__(self, provider: str, response: Response, ttfb_s: float) -> None:
        self._provider = provider
        self._response = response
        self.status = response.status
        self.content_type = response.content_type or "text/event-stream"
        self.ttfb_s = ttfb_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.chunks():
                yield chunk
        except (TimeoutError, OSError) as exc:  # Http1Error is an OSError
            raise transport_error(self._provider, exc) from exc

    async def aclose(self) -> None:
        self._response.release()


class OpenAICompatProvider:
    def __init__(
        self, config: ProviderConfig, client: Http1Client, connect_hint: str | None = None
    ) -> None:
        self.config = config
        self._client = client
        self._connect_hint = connect_hint
        params = {"api-version": config.api_version} if config.api_version else None
        self._endpoint = Endpoint.of(config.base_url, _auth_headers(config), params)
        t = config.timeouts
        # read_s bounds the wait for the first byte and every later gap in a stream.
        self._timeouts = Timeouts(t.connect_s, t.first_byte_s, t.total_s)

    async def _open(self, call: UpstreamCall) -> tuple[Response, float]:
        started = time.perf_counter()
        body = orjson.dumps(call.body)
        try:
            response = await self._client.post(self._endpoint, call.endpoint, body, self._timeouts)
        except (TimeoutError, OSError) as exc:
            raise transport_error(self.config.name, exc, self._connect_hint) from exc
        ttfb = time.perf_counter() - started
        if response.status >= 400:
            try:
                error_body = await response.read()
            except (TimeoutError, OSError):
                error_body = b""
            finally:
                response.release()
            raise error_from_status(self.config.name, response.status, error_body)
        return response, ttfb

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        response, ttfb = await self._open(call)
        try:
            body = await response.read()
        except (TimeoutError, OSError) as exc:
            raise transport_error(self.config.name, exc) from exc
        finally:
            response.release()
        content_type = response.content_type or "application/json"
        return UpstreamResponse(response.status, body, content_type, ttfb)

    async def stream(self, call: UpstreamCall) -> OpenAIStream:
        response, ttfb = await self._open(call)
        return OpenAIStream(self.config.name, response, ttfb)

    async def aclose(self) -> None:
        """The client is the app's; nothing of our own to close."""
