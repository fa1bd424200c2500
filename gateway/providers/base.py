"""The provider protocol: how the pipeline talks to any upstream.

A provider turns an `UpstreamCall` into OpenAI-shaped bytes: a whole body (`send`) or an SSE
stream (`stream`). Errors cross this boundary only as `UpstreamError` / `UpstreamTimeout`, raised
before the first byte; a stream that breaks later ends early and its caller bills what it saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.model import ProviderConfig

# Where `spendgate mock-upstream` (and the demo's mock) listen unless told otherwise: the
# packaged default config's upstream is http://127.0.0.1:9911/v1.
MOCK_PORT = 9911

# Statuses after which another attempt may succeed (OpenAI's SDK retries the same set).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class UpstreamCall:
    endpoint: str  # "chat/completions" | "completions" | "embeddings" | "responses"
    body: dict[str, Any]  # the client's body with the deployment's model name in place
    stream: bool
    request_id: str


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    content_type: str
    ttfb_s: float


class UpstreamStream(Protocol):
    status: int
    content_type: str
    ttfb_s: float

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    config: ProviderConfig

    async def send(self, call: UpstreamCall) -> UpstreamResponse: ...

    async def stream(self, call: UpstreamCall) -> UpstreamStream: ...

    async def aclose(self) -> None: ...
