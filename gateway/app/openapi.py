"""Every admin endpoint in one table, and the OpenAPI 3.1 document generated from it, served at
`GET /admin/openapi.json`.

Request bodies' schemas come from the `Spec`s the handlers validate with (`Record.json_schema`),
query and path parameters from the Endpoints that check them, and errors share OpenAI's error
shape. The document is served without the admin key: it describes the API's shape and holds
nothing secret (docs/admin-api.md says why).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.app.admin import Access, Endpoint, Reply, json_response
from gateway.app.admin_anomalies import ANOMALY_SCHEMA, anomaly_endpoints
from gateway.app.admin_approvals import APPROVAL_SCHEMA, approval_endpoints
from gateway.app.admin_budgets import BUDGET_SCHEMA, budget_endpoints
from gateway.app.admin_import import import_endpoints
from gateway.app.admin_keys import KEY_SCHEMA, key_endpoints
from gateway.app.admin_reports import report_endpoints
from gateway.app.team_api import team_endpoints
from gateway.config.checks import JsonSchema, Record

OPENAPI_PATH = "/admin/openapi.json"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ERROR_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error"]},
                "param": {
                    "type": ["string", "null"],
                    "description": "the field or parameter at fault (a key path for bodies)",
                },
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    400: "Invalid request: unknown query parameter, malformed JSON, or a body that fails its "
    "checks (`message` names every problem, `param` the first).",
    401: "No key, or an unknown or revoked one.",
    403: "The key may not do this (`admin_key_required`, `reporting_key_required`: a team's "
    "client key; `read_only_key`: a reporting or reader "
    "key asking for a change; `team_forbidden`: another team's spend), or the admin API is "
    "disabled (`admin_disabled`: no `server.admin_key`).",
    404: "Not found.",
    503: "The store (Redis) is unreachable; try again shortly.",
}
_PATH_PARAM = re.compile(r"\{([^}]+)\}")
_KEYS: dict[Access, str] = {
    "admin": "",
    "reporting": "Keys: the admin key or a reporting key (read-only).",
    "team": "Keys: a team's own client or reader key (its team only), or the admin or a "
    "reporting key (any team).",
    "public": "No key needed.",
}


async def openapi_document(request: web.Request, _: None) -> web.Response:
    return json_response(build_openapi(admin_endpoints()))


def admin_endpoints() -> tuple[Endpoint, ...]:
    """Every route under /admin/, this document's own included, and the team API's."""
    document = Endpoint(
        "GET",
        OPENAPI_PATH,
        openapi_document,
        "This document",
        "meta",
        (Reply(200, "The OpenAPI 3.1 document of the admin API.", {"type": "object"}),),
        access="public",
    )
    return (
        *key_endpoints(),
        *budget_endpoints(),
        *report_endpoints(),
        *import_endpoints(),
        *anomaly_endpoints(),
        *team_endpoints(),
        *approval_endpoints(),
        document,
    )


def admin_routes() -> list[web.RouteDef]:
    return [endpoint.route() for endpoint in admin_endpoints()]


def build_openapi(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "spendgate admin API",
            "version": __version__,
            "description": "Virtual keys, budgets, reports, external costs, imported history, "
            "spend anomalies and approvals of a spendgate gateway, and the team API (a team's "
            "own spend under /v1/spendgate/). Every operation but this document needs a key: "
            "the admin key (`server.admin_key`) for every one; a reporting key "
            "(`server.reporting_key` or `spendgate keys create --role reporting`) for the "
            "read-only ones marked so; a team's own key (client or reader) for the team API.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _ERROR_SCHEMA,
                "Key": KEY_SCHEMA,
                "Budget": BUDGET_SCHEMA,
                "Anomaly": ANOMALY_SCHEMA,
                "Approval": APPROVAL_SCHEMA,
            },
            "securitySchemes": {
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`: the admin key "
                    "(`server.admin_key`), or a reporting or team key where an operation "
                    "says so",
                },
                "adminKeyHeader": {"type": "apiKey", "in": "header", "name": "x-sg-admin-key"},
            },
        },
        "security": [{"adminKey": []}, {"adminKeyHeader": []}],
        "tags": [
            {"name": "keys", "description": "Virtual keys (`sk-sg-...`)."},
            {"name": "budgets", "description": "Budgets and where they stand."},
            {"name": "reports", "description": "Showback, chargeback, FOCUS and forecasts."},
            {"name": "costs", "description": "External costs posted to the ledger."},
            {"name": "history", "description": "Past spend imported into the ledger."},
            {"name": "anomalies", "description": "Spend anomalies, and feedback on them."},
            {"name": "team", "description": "A team's own spend and budgets, with its own key."},
            {"name": "approvals", "description": "Approvals of requests over a policy's limit."},
            {"name": "meta", "description": "This document."},
        ],
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    description = " ".join(filter(None, (endpoint.description, _KEYS[endpoint.access])))
    if description:
        operation["description"] = description
    parameters = [
        {"name": p.name, "in": "query", "required": False, "description": p.description,
         "schema": p.schema}
        for p in endpoint.query
    ]  # fmt: skip
    named = {p.name: p for p in endpoint.path_params}
    for name in _PATH_PARAM.findall(endpoint.path):
        param = named[name]  # a KeyError here is an Endpoint that forgot to describe it
        parameters.append(
            {"name": name, "in": "path", "required": True, "description": param.description,
             "schema": param.schema}
        )  # fmt: skip
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        schema = Record(endpoint.body).json_schema()
        if endpoint.fill_from_path:
            schema["required"] = [
                n for n in schema.get("required", ()) if n not in endpoint.fill_from_path
            ]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    responses: dict[str, Any] = {}
    for reply in endpoint.replies:
        responses[str(reply.status)] = _reply(reply)
    statuses = [*endpoint.errors]
    if parameters or endpoint.body is not None:
        statuses.append(400)
    if not endpoint.public:
        statuses += [401, 403]
    for status in sorted(set(statuses)):
        responses[str(status)] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
    operation["responses"] = responses
    if endpoint.public:
        operation["security"] = []
    return operation


def _reply(reply: Reply) -> dict[str, Any]:
    content = {media: {"schema": schema} for media, schema in reply.media.items()}
    if reply.schema is not None:
        content["application/json"] = {"schema": reply.schema}
    return {"description": reply.description, "content": content}
