"""OpenAI-compatible upstreams (OpenAI, Azure OpenAI, vLLM, Ollama, Together, Groq, ...).

They differ only by base URL, auth header and extra headers, so one class serves all of them
over the app's single shared aiohttp session. Bodies go out as JSON and come back as raw bytes:
nothing is re-encoded on the way back, streams included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson

from gateway.config.model import ProviderConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers.base import RETRYABLE_STATUSES, UpstreamCall, UpstreamResponse


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


def transport_error(provider: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"upstream {provider} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"cannot connect to upstream {provider}: {exc.strerror or exc}")
    return UpstreamError(f"upstream {provider} connection failed: {type(exc).__name__}: {exc}")


class OpenAIStream:
    """An open upstream SSE response; iterating yields its bytes as they arrive."""

    def __init__(self, provider: str, response: aiohttp.ClientResponse, ttfb_s: float) -> None:
        self._provider = provider
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("Content-Type", "text/event-stream")
        self.ttfb_s = ttfb_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(self._provider, exc) from exc

    async def aclose(self) -> None:
        self._response.close()


class OpenAICompatProvider:
    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._session = session
        self._headers = _auth_headers(config)
        self._params = {"api-version": config.api_version} if config.api_version else None
        t = config.timeouts
        # sock_read bounds the wait for the first byte and every later gap in a stream.
        self._timeout = aiohttp.ClientTimeout(
            total=t.total_s, sock_connect=t.connect_s, sock_read=t.first_byte_s
        )

    async def _open(self, call: UpstreamCall) -> tuple[aiohttp.ClientResponse, float]:
        started = time.perf_counter()
        try:
            response = await self._session.post(
                f"{self.config.base_url}/{call.endpoint}",
                data=orjson.dumps(call.body),
                headers=self._headers,
                params=self._params,
                timeout=self._timeout,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(self.config.name, exc) from exc
        ttfb = time.perf_counter() - started
        if response.status >= 400:
            try:
                body = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                response.release()
            raise error_from_status(self.config.name, response.status, body)
        return response, ttfb

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        response, ttfb = await self._open(call)
        try:
            body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(self.config.name, exc) from exc
        finally:
            response.release()
        content_type = response.headers.get("Content-Type", "application/json")
        return UpstreamResponse(response.status, body, content_type, ttfb)

    async def stream(self, call: UpstreamCall) -> OpenAIStream:
        response, ttfb = await self._open(call)
        return OpenAIStream(self.config.name, response, ttfb)

    async def aclose(self) -> None:
        """The session is the app's; nothing of our own to close."""
