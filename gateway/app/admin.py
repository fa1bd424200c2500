"""The admin HTTP API under /admin/: issuing, listing and revoking virtual keys.

Every endpoint needs the admin key (`Authorization: Bearer ...` or `x-sg-admin-key`), checked
against the sha256 digest in `server.admin_key`. Handlers raise `GatewayError`s; the error
middleware renders them. Request bodies are validated strictly: unknown fields are errors.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from aiohttp import web

from gateway.app.state import KEYRING, LIVE_CONFIG
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied

_CREATE_FIELDS = frozenset({"team", "project", "environment", "workload", "tags", "name"})
_OPTIONAL_TEXT_FIELDS = ("project", "environment", "workload", "name")
_MAX_TEXT = 200
_MAX_TAGS = 50
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


def admin_routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/keys", create_key),
        web.get("/admin/keys", list_keys),
        web.delete("/admin/keys/{key_id}", revoke_key),
    ]


def authorize(request: web.Request) -> None:
    """Raise unless the request carries the configured admin key."""
    expected = request.app[LIVE_CONFIG].current.server.admin_key_hash
    if not expected:
        raise PermissionDenied("admin API disabled: set server.admin_key", code="admin_disabled")
    given = _presented_key(request)
    if given is None:
        raise AuthenticationFailed(
            "missing admin key: send it as `Authorization: Bearer <admin key>`"
        )
    # Compare digests in constant time, so response timing reveals nothing about the key.
    digest = hashlib.sha256(given.encode()).hexdigest()
    if not hmac.compare_digest(digest, expected):
        raise AuthenticationFailed("invalid admin key")


async def create_key(request: web.Request) -> web.Response:
    authorize(request)
    body = await _json_object(request)
    fields = _create_fields(body)
    teams = request.app[LIVE_CONFIG].current.teams
    secret, info = await request.app[KEYRING].create(
        fields.team,
        project=fields.optional["project"],
        environment=fields.optional["environment"],
        workload=fields.optional["workload"],
        name=fields.optional["name"],
        tags=fields.tags,
        known_teams=teams.keys(),
    )
    # The only response that ever carries the secret: keep it out of every cache.
    return _json(
        {"key": secret, **info.to_dict()}, status=201, headers={"Cache-Control": "no-store"}
    )


async def list_keys(request: web.Request) -> web.Response:
    authorize(request)
    query = request.query
    unknown = sorted(set(query) - {"team", "include_revoked"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter '{unknown[0]}'", param=unknown[0])
    team = query.get("team") or None
    include_revoked = _flag(query.get("include_revoked", ""), "include_revoked")
    infos = await request.app[KEYRING].list(team, include_revoked=include_revoked)
    return _json({"object": "list", "data": [info.to_dict() for info in infos]})


async def revoke_key(request: web.Request) -> web.Response:
    authorize(request)
    key_id = request.match_info["key_id"]
    if not await request.app[KEYRING].revoke(key_id):
        raise NotFound(f"no key with id {key_id!r}", param="key_id", code="key_not_found")
    return _json({"key_id": key_id, "revoked": True})


@dataclass(frozen=True, slots=True)
class _CreateFields:
    team: str
    optional: Mapping[str, str | None]  # project, environment, workload, name
    tags: dict[str, str] | None


def _create_fields(body: Mapping[str, object]) -> _CreateFields:
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_CREATE_FIELDS))
        raise InvalidRequest(f"unknown field '{unknown[0]}' (allowed: {allowed})", param=unknown[0])
    team = body.get("team")
    if not isinstance(team, str) or not team:
        raise InvalidRequest("'team' is required and must be a non-empty string", param="team")
    optional = {name: _optional_text(body, name) for name in _OPTIONAL_TEXT_FIELDS}
    return _CreateFields(team, optional, _tags(body.get("tags")))


def _optional_text(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise InvalidRequest(
            f"'{name}' must be a non-empty string of at most {_MAX_TEXT} characters", param=name
        )
    return value


def _tags(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > _MAX_TAGS:
        raise InvalidRequest(
            f"'tags' must be an object of at most {_MAX_TAGS} string values", param="tags"
        )
    for key, tag in value.items():
        if not key or len(key) > _MAX_TEXT or not isinstance(tag, str) or len(tag) > _MAX_TEXT:
            raise InvalidRequest(
                f"tag {key!r} must map a non-empty name to a string of at most {_MAX_TEXT} "
                "characters",
                param=f"tags.{key}",
            )
    return {str(k): str(v) for k, v in value.items()}


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("x-sg-admin-key")
    if header:
        return header.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def _json_object(request: web.Request) -> dict[str, object]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"'{name}' must be true or false, not {value!r}", param=name)


def _json(
    payload: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )
