"""The admin API's OpenAPI document, served by a whole gateway over a real socket: it lists every
/admin route and nothing else, and what its request schemas refuse the handlers refuse (cases
generated from the schemas), while documented samples pass both; answers match their schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from tests.anomalies.support import ANOMALY_ID
from tests.conftest import ADMIN_KEY, Gateway

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# A body each endpoint accepts, every optional key set, so each can be spoiled in turn.
SAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/admin/keys"): {
        "team": "alpha",
        "name": "svc",
        "project": "search",
        "environment": "dev",
        "workload": "chat",
        "tags": {"cost_center": "cc-42"},
    },
    ("post", "/admin/budgets"): {
        "name": "alpha-search",
        "team": "alpha",
        "period": "daily",
        "limit_usd": "5.25",
        "limit_tokens": 100_000,
        "scope": "project",
        "match": "search",
        "on_exceed": "alert",
        "thresholds": [50, 100],
    },
    ("put", "/admin/budgets/{name}"): {
        "team": "beta",
        "period": "monthly",
        "limit_usd": 20,
        "on_exceed": "downgrade",
        "downgrade_to": "gpt-4o-mini",
    },
    ("post", "/admin/costs"): {
        "id": "invoice-0042",
        "team": "alpha",
        "amount_usd": "1234.5",
        "description": "GPU hours of training run 7",
        "project": "search",
        "environment": "prod",
        "workload": "training",
        "provider": "gpu-cloud",
        "tags": {"run": "7"},
    },
    ("post", "/admin/anomalies/{id}/feedback"): {"verdict": "expected", "note": "a load test"},
    ("post", "/admin/approvals/{id}/approve"): {
        "window_s": 3600,
        "requests": 10,
        "by": "finops",
        "note": "quarter end",
    },
    ("post", "/admin/approvals/{id}/deny"): {"by": "finops", "note": "use the batch API"},
}
APPROVAL_ID = "apr_00000000000000aa"
ACROSS_KEYS = {
    "/admin/keys": ("team",),  # unless role is reporting
    "/admin/budgets": ("limit_usd",),
    "/admin/budgets/{name}": ("limit_usd", "on_exceed", "downgrade_to"),
}
# Values of every JSON type (and some strings no pattern of ours allows), tried on each key.
CANDIDATES: list[object] = [None, True, 7, 1.5, -1, "", "has space!", "x" * 600, [], [0], {"k": 1}]


async def document(gateway: Gateway) -> dict[str, Any]:
    """The document, fetched without the admin key."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.url + "/admin/openapi.json") as resp,
    ):
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


def validator(schema: dict[str, Any], doc: dict[str, Any]) -> Draft202012Validator:
    """A validator for a part of `doc` whose `$ref`s point into the document's components."""
    return Draft202012Validator({"allOf": [schema], "components": doc["components"]})


def concrete(path: str) -> str:
    approvals = path.startswith("/admin/approvals")
    return (
        path.replace("{name}", "from-path")
        .replace("{key_id}", "key_000000000000")
        .replace("{id}", APPROVAL_ID if approvals else ANOMALY_ID)
    )


async def plant_anomaly(gateway: Gateway) -> None:
    from gateway.app.state import REDIS
    from tests.anomalies.support import plant_beside_detector

    await plant_beside_detector(gateway.app[REDIS])


async def plant_approval(gateway: Gateway) -> None:
    """A pending approval with a known id, as a request over a limit leaves it."""
    from gateway import rediskeys
    from gateway.app.state import REDIS

    record = {
        "id": APPROVAL_ID,
        "current": "key_000000000000|gpt-4o|big",
        "status": "pending",
        "policy": "big",
        "key_id": "key_000000000000",
        "key_name": None,
        "team": "alpha",
        "project": None,
        "environment": "dev",
        "model": "gpt-4o",
        "reason": "n 8 is over 4",
        "cost_nano": "1500",
        "asks": 1,
        "created_ms": 1_790_000_000_000,
        "last_ms": 1_790_000_000_000,
        "expires_ms": 1_990_000_000_000,
        "requests": -1,
        "used": 0,
    }
    redis = gateway.app[REDIS]
    await redis.hset(rediskeys.approval_records(), APPROVAL_ID, json.dumps(record))
    await redis.hset(rediskeys.approval_current(), record["current"], APPROVAL_ID)
    await redis.zadd(rediskeys.approval_index(), {APPROVAL_ID: record["created_ms"]})


async def call(gateway: Gateway, method: str, path: str, body: object) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gateway.url + concrete(path), json=body, headers=AUTH) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def body_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = doc["paths"][path][method]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


async def test_every_admin_route_is_documented_and_nothing_else(gateway: Gateway) -> None:
    doc = await document(gateway)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in gateway.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(("/admin/", "/v1/spendgate/"))
        and route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
    assert len(routes) >= 14
    assert {path for _, path in documented if not path.startswith("/admin/")} == {
        "/v1/spendgate/usage",
        "/v1/spendgate/budgets",
        "/v1/spendgate/scorecard",
    }


async def test_the_document_is_openapi_3_1_with_valid_schemas(gateway: Gateway) -> None:
    doc = await document(gateway)  # served without the admin key
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, ops in doc["paths"].items():
        for method, operation in ops.items():
            public = operation.get("security") == []
            assert public == (path == "/admin/openapi.json"), (method, path)
            if not public:
                assert {"401", "403"} <= set(operation["responses"])
            for param in operation.get("parameters", []):
                Draft202012Validator.check_schema(param["schema"])
            for reply in operation["responses"].values():
                for media in reply["content"].values():
                    Draft202012Validator.check_schema(media["schema"])
            if "requestBody" in operation:
                assert "400" in operation["responses"]
                Draft202012Validator.check_schema(body_schema(doc, method, path))


@pytest.mark.parametrize(("method", "path"), list(SAMPLES))
async def test_what_the_schema_refuses_the_handler_refuses(
    gateway: Gateway, method: str, path: str
) -> None:
    doc = await document(gateway)
    schema = body_schema(doc, method, path)
    check = validator(schema, doc)
    sample = SAMPLES[(method, path)]
    assert not list(check.iter_errors(sample)), "the sample must be valid"
    cases: list[tuple[str, dict[str, Any]]] = [("surplus", {**sample, "surplus": 1})]
    for name in schema.get("required", []):
        cases.append((name, {k: v for k, v in sample.items() if k != name}))
    for name, prop in schema["properties"].items():
        spoiled = [value for value in CANDIDATES if not validator(prop, doc).is_valid(value)]
        assert spoiled, f"every candidate fits {name}?"
        cases += [(name, {**sample, name: value}) for value in spoiled]
    for param, body in cases:
        assert not check.is_valid(body), (param, body)
        status, answer = await call(gateway, method, path, body)
        assert status == 400, (param, body, answer)
        got = answer["error"]["param"]
        assert got == param or got.startswith((f"{param}.", f"{param}[")), (param, body, answer)
        assert validator({"$ref": "#/components/schemas/Error"}, doc).is_valid(answer)


@pytest.mark.parametrize(("method", "path"), list(SAMPLES))
async def test_what_the_schema_accepts_the_handler_accepts(
    gateway: Gateway, method: str, path: str
) -> None:
    doc = await document(gateway)
    operation = doc["paths"][path][method]
    sample = SAMPLES[(method, path)]
    # The required keys, plus what the rules across keys (in the schema's description) ask.
    keys = [*body_schema(doc, method, path).get("required", []), *ACROSS_KEYS.get(path, ())]
    required = {name: sample[name] for name in keys}
    if "{id}" in path:
        await plant_anomaly(gateway)
        await plant_approval(gateway)
    if path == "/admin/costs":
        required["id"] = "invoice-0043"  # the same id for other content is refused
    for body in (sample, required):
        assert validator(body_schema(doc, method, path), doc).is_valid(body)
        status, answer = await call(gateway, method, path, copy.deepcopy(body))
        assert 200 <= status < 300, (body, answer)
        reply = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        errors = [e.message for e in validator(reply, doc).iter_errors(answer)]
        assert errors == [], (body, answer)
        if path.startswith("/admin/budgets"):
            status, _ = await call(gateway, "delete", f"/admin/budgets/{answer['name']}", None)
            assert status == 200


async def test_answers_match_their_documented_schemas(gateway: Gateway) -> None:
    doc = await document(gateway)
    _, created = await call(gateway, "post", "/admin/keys", SAMPLES[("post", "/admin/keys")])
    key_id = created["key_id"]
    await call(gateway, "post", "/admin/budgets", SAMPLES[("post", "/admin/budgets")])
    await plant_anomaly(gateway)
    await plant_approval(gateway)
    for method, path, concrete_path, expected in [
        ("get", "/admin/keys", "/admin/keys?include_revoked=true", 200),
        ("get", "/admin/budgets", "/admin/budgets?team=alpha", 200),
        ("delete", "/admin/keys/{key_id}", f"/admin/keys/{key_id}", 200),
        ("delete", "/admin/keys/{key_id}", "/admin/keys/key_000000000000", 404),
        ("delete", "/admin/budgets/{name}", "/admin/budgets/alpha-search", 200),
        ("delete", "/admin/budgets/{name}", "/admin/budgets/alpha-search", 404),
        ("get", "/admin/reports/chargeback", "/admin/reports/chargeback?format=json", 200),
        ("get", "/admin/reports/showback", "/admin/reports/showback?format=json", 200),
        ("get", "/admin/reports/focus", "/admin/reports/focus?format=json", 200),
        ("get", "/admin/reports/tagging", "/admin/reports/tagging?format=json", 200),
        ("get", "/admin/keys", "/admin/keys?teams=alpha", 400),
        ("get", "/admin/anomalies", "/admin/anomalies?since=2026-01-01&team=alpha", 200),
        ("get", "/admin/anomalies", "/admin/anomalies?since=yesterday", 400),
        ("get", "/admin/anomalies/{id}", f"/admin/anomalies/{ANOMALY_ID}", 200),
        ("get", "/admin/anomalies/{id}", "/admin/anomalies/nope", 404),
        ("post", "/admin/anomalies/{id}/feedback", "/admin/anomalies/nope/feedback", 404),
        ("get", "/admin/approvals", "/admin/approvals?status=pending&team=alpha", 200),
        ("get", "/admin/approvals", "/admin/approvals?status=waiting", 400),
        ("get", "/admin/approvals/{id}", f"/admin/approvals/{APPROVAL_ID}", 200),
        ("get", "/admin/approvals/{id}", "/admin/approvals/apr_nope", 404),
        ("post", "/admin/approvals/{id}/deny", "/admin/approvals/apr_nope/deny", 404),
    ]:
        body: dict[str, Any] | None = None
        if method == "post":
            body = {} if path.startswith("/admin/approvals") else {"verdict": "real"}
        status, answer = await call(gateway, method, concrete_path, body)
        assert status == expected, (concrete_path, answer)
        reply = doc["paths"][path][method]["responses"][str(status)]
        schema = reply["content"]["application/json"]["schema"]
        errors = [e.message for e in validator(schema, doc).iter_errors(answer)]
        assert errors == [], (concrete_path, answer)
