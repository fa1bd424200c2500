"""The admin HTTP API's machinery: the admin key, and `Endpoint`, which ties a route to what it
accepts (query parameters, a JSON body checked by a config `Spec`) and what it answers.

Auth, unknown query parameters, JSON parsing and body validation happen here, once, before a
handler runs with the checked body; problems become one OpenAI-shaped 400 naming every bad
field. The OpenAPI document (`openapi.py`) is generated from the same Endpoints, so it cannot
drift from what the handlers accept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.app.state import LIVE_CONFIG
from gateway.config.checks import JsonSchema, Spec, checked
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.validation import read_body

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter."""

    name: str
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: JSON matching `schema`, or the content types of `media`."""

    status: int
    description: str
    schema: JsonSchema | None = None
    media: Mapping[str, JsonSchema] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler  # called as handler(request, checked body or None)
    summary: str
    tag: str
    replies: tuple[Reply, ...]
    description: str = ""
    body: type[Spec] | None = None  # a JSON object with exactly this spec's keys
    query: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    # Path parameters that stand for a body key of the same name when the body leaves it out.
    fill_from_path: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()  # statuses a handler raises beyond auth and validation
    public: bool = False  # served without the admin key

    def route(self) -> web.RouteDef:
        return web.route(self.method, self.path, self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.public:
            authorize(request)
        allowed = {param.name for param in self.query}
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
        body = None
        if self.body is not None:
            raw = await json_object(request)
            for name in self.fill_from_path:
                value = request.match_info[name]
                if raw.setdefault(name, value) != value:
                    raise InvalidRequest(
                        f"'{name}' in the body ({raw[name]!r}) differs from the path ({value!r})",
                        param=name,
                    )
            body = checked(self.body, raw)
        return await self.handler(request, body)


def authorize(request: web.Request) -> None:
    """Raise unless the request carries the configured admin key."""
    expected = request.app[LIVE_CONFIG].current.server.admin_key_hash
    if not expected:
        raise PermissionDenied("admin API disabled: set server.admin_key", code="admin_disabled")
    given = presented_key(request)
    if given is None:
        raise AuthenticationFailed(
            "missing admin key: send it as `Authorization: Bearer <admin key>`"
        )
    if not is_admin_key(request, given):
        raise AuthenticationFailed("invalid admin key")


def is_admin_key(request: web.Request, given: str) -> bool:
    """Whether `given` is the configured admin key (False when none is configured)."""
    expected = request.app[LIVE_CONFIG].current.server.admin_key_hash
    # Compare digests in constant time, so response timing reveals nothing about the key.
    digest = hashlib.sha256(given.encode()).hexdigest()
    return expected is not None and hmac.compare_digest(digest, expected)


async def json_object(request: web.Request) -> dict[str, object]:
    raw = await read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter: true/1/yes or false/0/no (absent: false)."""
    value = request.query.get(name, "")
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"'{name}' must be true or false, not {value!r}", param=name)


def json_response(
    payload: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def presented_key(request: web.Request) -> str | None:
    """The key a request carries: `x-sg-admin-key`, else `Authorization: Bearer`."""
    header = request.headers.get("x-sg-admin-key")
    if header:
        return header.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
