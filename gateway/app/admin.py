"""The admin HTTP API's machinery: who may call what (the admin key, the read-only reporting key,
a team's keys), and `Endpoint`, which ties a route to what it accepts (query parameters, a JSON
body checked by a config `Spec`) and what it answers.

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
from typing import Any, Literal

import orjson
from aiohttp import web

from gateway.app.state import KEYRING, LIVE_CONFIG
from gateway.config.checks import JsonSchema, Spec, checked
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.store.keys import KEY_PREFIX
from gateway.validation import read_body

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
# Who may call an endpoint: the admin key only; also the read-only reporting key (reports);
# also a team's own keys (its own spend: the handler narrows to the team, `team_in_view`);
# anyone.
Access = Literal["admin", "reporting", "team", "public"]
Role = Literal["admin", "reporting", "client", "reader"]

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
    access: Access = "admin"

    @property
    def public(self) -> bool:
        return self.access == "public"

    def route(self) -> web.RouteDef:
        return web.route(self.method, self.path, self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.public:
            request[CALLER] = await authorize(request, self.access)
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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request to the admin or team API."""

    role: Role
    team: str | None = None  # a team key's team; None: every team (admin, reporting)
    key_id: str | None = None  # a virtual key's public id


# Who sent a request to the admin or team API: set by `Endpoint` once its key is checked.
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
_ALLOWED: Mapping[Access, frozenset[Role]] = {
    "admin": frozenset({"admin"}),
    "reporting": frozenset({"admin", "reporting"}),
    "team": frozenset({"admin", "reporting", "client", "reader"}),
}


async def authorize(request: web.Request, access: Access = "admin") -> Caller:
    """The caller, if its key may call an endpoint of `access`: 401 for no key or an unknown
    one, 403 for a known key without the right (and for the admin API when it is off)."""
    server = request.app[LIVE_CONFIG].current.server
    if access == "admin" and not server.admin_key_hash:
        raise PermissionDenied("admin API disabled: set server.admin_key", code="admin_disabled")
    given = presented_key(request)
    if given is None:
        raise AuthenticationFailed(f"missing key: send {_WHO[access]} as a Bearer token")
    caller = await _identify(request, given)
    if caller is None:
        raise AuthenticationFailed("invalid key" if access != "admin" else "invalid admin key")
    if caller.role not in _ALLOWED[access]:
        if caller.role in ("reporting", "reader"):
            raise PermissionDenied(
                f"this {caller.role} key is read-only; this needs {_WHO[access]}",
                code="read_only_key",
            )
        # A client key: admin_key_required, or reporting_key_required for the reports.
        raise PermissionDenied(f"this needs {_WHO[access]}", code=f"{access}_key_required")
    return caller


_WHO: Mapping[Access, str] = {
    "admin": "the admin key",
    "reporting": "the admin key or a reporting key",
    "team": "a team's key (or the admin or a reporting key)",
    "public": "no key",
}


async def _identify(request: web.Request, given: str) -> Caller | None:
    server = request.app[LIVE_CONFIG].current.server
    # Compare digests in constant time, so response timing reveals nothing about the keys.
    digest = hashlib.sha256(given.encode()).hexdigest()
    if server.admin_key_hash and hmac.compare_digest(digest, server.admin_key_hash):
        return Caller("admin")
    if server.reporting_key_hash and hmac.compare_digest(digest, server.reporting_key_hash):
        return Caller("reporting")
    keyring = request.app.get(KEYRING)  # an app serving only the admin API may have none
    if keyring is None or not given.startswith(KEY_PREFIX):
        return None
    holder = await keyring.identify(given)
    if holder is None:
        return None
    return Caller(holder.role, holder.team, holder.key_id)


def team_in_view(request: web.Request, asked: str | None) -> str:
    """The team a request may read: a team key's own (`asked` must be it or absent); for the
    admin and reporting keys, the team asked for, which they must name."""
    caller = request[CALLER]
    if caller.team is None:
        if not asked:
            raise InvalidRequest(
                f"name the team: ?team=<team> (a {caller.role} key reads any team)", param="team"
            )
        return asked
    if asked and asked != caller.team:
        raise PermissionDenied(
            f"this key reads team {caller.team!r}'s spend only, not {asked!r}",
            param="team",
            code="team_forbidden",
        )
    return caller.team


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
