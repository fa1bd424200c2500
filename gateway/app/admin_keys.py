"""The admin API for virtual keys: issue, list and revoke (`spendgate keys` without a shared
store goes through it). A key's secret is in the create answer only; lists show ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.app.admin import Endpoint, Param, Reply, flag, json_response
from gateway.app.state import KEYRING, LIVE_CONFIG
from gateway.config.checks import JsonSchema, OneOf, Spec, Str, checks
from gateway.config.schema import LABEL, TAGS
from gateway.errors import NotFound
from gateway.store.keys import KEY_ROLES, KeyRole


@dataclass(frozen=True, kw_only=True)
class NewKeySpec(Spec):
    """A key to issue: its role, its team, and how its traffic is attributed."""

    team: str | None = field(
        default=None,
        metadata=checks(Str(), doc="A team of the config; required unless role is reporting."),
    )
    role: KeyRole = field(
        default="client",
        metadata=checks(
            OneOf(*KEY_ROLES),
            doc="client: sends traffic, reads its team's spend; reader: only reads its team's "
            "spend; reporting: reads every team's reports, belongs to no team.",
        ),
    )
    name: str | None = field(
        default=None,
        metadata=checks(
            LABEL,
            doc="A label for humans (the service using the key). A name the team's config keys "
            "use is refused.",
        ),
    )
    project: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    environment: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    workload: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    tags: dict[str, str] = field(
        default_factory=dict, metadata=checks(TAGS, doc="Free-form allocation tags.")
    )


async def create_key(request: web.Request, body: NewKeySpec) -> web.Response:
    teams = request.app[LIVE_CONFIG].current.teams
    secret, info = await request.app[KEYRING].create(
        body.team,
        role=body.role,
        project=body.project,
        environment=body.environment,
        workload=body.workload,
        name=body.name,
        tags=body.tags,
        known_teams=teams.keys(),
    )
    # The only response that ever carries the secret: keep it out of every cache.
    return json_response(
        {"key": secret, **info.to_dict()}, status=201, headers={"Cache-Control": "no-store"}
    )


async def list_keys(request: web.Request, _: None) -> web.Response:
    team = request.query.get("team") or None
    include_revoked = flag(request, "include_revoked")
    infos = await request.app[KEYRING].list(team, include_revoked=include_revoked)
    return json_response({"object": "list", "data": [info.to_dict() for info in infos]})


async def revoke_key(request: web.Request, _: None) -> web.Response:
    key_id = request.match_info["key_id"]
    revoked = await request.app[KEYRING].revoke(key_id)
    if revoked is None:
        raise NotFound(f"no key with id {key_id!r}", param="key_id", code="key_not_found")
    return json_response(revoked.to_dict())


def _nullable(kind: str) -> JsonSchema:
    return {"type": [kind, "null"]}


KEY_SCHEMA: JsonSchema = {
    "type": "object",
    "required": [
        *("key_id", "name", "team", "project", "environment", "workload", "tags"),
        *("created_at", "revoked", "revoked_at", "source", "role"),
    ],
    "properties": {
        "key_id": {"type": "string", "pattern": "^key_[0-9a-f]{12}$"},
        "name": _nullable("string"),
        "team": {**_nullable("string"), "description": "null for reporting keys"},
        "project": _nullable("string"),
        "environment": _nullable("string"),
        "workload": _nullable("string"),
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "created_at": {**_nullable("number"), "description": "epoch seconds; null: config key"},
        "revoked": {"type": "boolean"},
        "revoked_at": {**_nullable("number"), "description": "epoch seconds"},
        "source": {
            "enum": ["store", "config"],
            "description": "store: issued through the API or CLI; config: declared in the YAML",
        },
        "role": {
            "enum": list(KEY_ROLES),
            "description": "client: traffic and its team's spend; reader: its team's spend; "
            "reporting: every team's reports, read-only",
        },
    },
}
_CREATED: JsonSchema = {
    "allOf": [
        {"$ref": "#/components/schemas/Key"},
        {
            "type": "object",
            "required": ["key"],
            "properties": {"key": {"type": "string", "description": "the secret, shown once"}},
        },
    ]
}
_LIST: JsonSchema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}},
    },
}
_REVOKED: JsonSchema = {
    "type": "object",
    "required": ["key_id", "revoked", "revoked_at", "already_revoked"],
    "properties": {
        "key_id": {"type": "string"},
        "revoked": {"const": True},
        "revoked_at": {"type": "number", "description": "epoch seconds of the first revoke"},
        "already_revoked": {
            "type": "boolean",
            "description": "true: an earlier call revoked it; nothing changed",
        },
    },
}
_KEY_ID = Param("key_id", "The key's id, as `GET /admin/keys` shows it (key_ + 12 hex digits).")


def key_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "POST",
            "/admin/keys",
            create_key,
            "Issue a virtual key",
            "keys",
            (Reply(201, "The new key; `key` is the secret, shown this once.", _CREATED),),
            description="Only the key's SHA-256 digest is stored. The answer carries "
            "`Cache-Control: no-store`. `team` is required for client and reader keys and "
            "refused for reporting keys; project, environment, workload and tags are for client "
            "keys only.",
            body=NewKeySpec,
        ),
        Endpoint(
            "GET",
            "/admin/keys",
            list_keys,
            "List keys",
            "keys",
            (Reply(200, "Store and config keys, oldest first (config keys last).", _LIST),),
            query=(
                Param("team", "Only this team's keys."),
                Param(
                    "include_revoked",
                    "Include revoked keys (true/false, 1/0, yes/no).",
                    {"type": "boolean", "default": False},
                ),
            ),
        ),
        Endpoint(
            "DELETE",
            "/admin/keys/{key_id}",
            revoke_key,
            "Revoke a key",
            "keys",
            (Reply(200, "Revoked (now, or by an earlier call: see already_revoked).", _REVOKED),),
            description="The record stays for audit. Other replicas stop accepting the key within "
            "`server.key_cache_ttl_s`. A key declared in the config is refused (400 "
            "`key_declared_in_config`): remove it from `teams.<team>.keys`.",
            path_params=(_KEY_ID,),
            errors=(404,),
        ),
    )


def admin_routes() -> list[web.RouteDef]:
    return [endpoint.route() for endpoint in key_endpoints()]
