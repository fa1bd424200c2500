"""The admin API for spend anomalies: list them (the anomalies report), read one, and record a
person's verdict on one.

    GET  /admin/anomalies?team=&since=7d&format=json|csv|table
    GET  /admin/anomalies/{id}
    POST /admin/anomalies/{id}/feedback   {"verdict": "expected" | "real", "note": "..."}

`expected` (seasonal, planned) also stops the alerts about that anomaly and, for
`anomalies.expected_suppress_days`, new anomalies of the same team, kind and leading cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from gateway.analytics.anomaly import KINDS, STATUSES, VERDICTS, Feedback, public_view
from gateway.anomalies.records import AnomalyStore
from gateway.app.admin import Endpoint, Param, Reply, json_response
from gateway.app.admin_reports import format_param, rendered, report_format
from gateway.app.state import CLOCK, REDIS
from gateway.config.checks import JsonSchema, OneOf, Spec, Str, checks
from gateway.errors import InvalidRequest, NotFound
from gateway.reports.anomalies import DEFAULT_SINCE, SINCE_HELP, anomalies_report, parse_since


@dataclass(frozen=True, kw_only=True)
class FeedbackSpec(Spec):
    """A person's verdict on an anomaly; the latest one counts."""

    verdict: str = field(
        metadata=checks(
            OneOf(*VERDICTS),
            doc="expected: seasonal or planned (no more alerts about it, and the same pattern "
            "is suppressed); real: confirmed.",
        )
    )
    note: str = field(default="", metadata=checks(Str(allow_empty=True, max_len=1000)))


async def list_anomalies(request: web.Request, _: None) -> web.Response:
    query = request.query
    now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
    try:
        since = parse_since(query.get("since", DEFAULT_SINCE), now)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    fmt = report_format(query, "json")
    report = await anomalies_report(request.app[REDIS], since, query.get("team") or None)
    return rendered(report, fmt)


async def get_anomaly(request: web.Request, _: None) -> web.Response:
    anomaly_id = request.match_info["id"]
    found = await AnomalyStore(request.app[REDIS]).get(anomaly_id)
    if found is None:
        raise _not_found(anomaly_id)
    return json_response(public_view(found.anomaly, found.feedback))


async def post_feedback(request: web.Request, body: FeedbackSpec) -> web.Response:
    anomaly_id = request.match_info["id"]
    feedback = Feedback(body.verdict, body.note, request.app[CLOCK]())  # type: ignore[arg-type]
    found = await AnomalyStore(request.app[REDIS]).set_feedback(anomaly_id, feedback)
    if found is None:
        raise _not_found(anomaly_id)
    return json_response(public_view(found.anomaly, found.feedback))


def _not_found(anomaly_id: str) -> NotFound:
    return NotFound(f"no anomaly {anomaly_id!r}", param="id", code="anomaly_not_found")


_USD: JsonSchema = {"type": "string", "pattern": r"^-?\d+\.\d+$", "description": "exact USD"}
_TIME: JsonSchema = {"type": "string", "format": "date-time"}
ANOMALY_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "A spend anomaly (docs/anomalies.md): its numbers cover its unusual buckets "
    "(a drift: the last day).",
    "required": [
        "id",
        "team",
        "kind",
        "scope",
        "status",
        "severity",
        "start",
        "end",
        "detected_at",
        "resolved_at",
        "bucket_s",
        "buckets",
        "actual_usd",
        "expected_usd",
        "band_usd",
        "excess_usd",
        "z",
        "causes",
        "suppressed_by",
        "feedback",
    ],
    "properties": {
        "id": {"type": "string"},
        "team": {"type": "string"},
        "kind": {"enum": list(KINDS)},
        "scope": {
            "type": "string",
            "description": "what tripped: team, key:<key id> or model:<requested model>",
        },
        "status": {"enum": list(STATUSES)},
        "severity": {"enum": ["low", "medium", "high", "critical"]},
        "start": _TIME,
        "end": _TIME,
        "detected_at": _TIME,
        "resolved_at": {**_TIME, "type": ["string", "null"]},
        "bucket_s": {"type": "integer"},
        "buckets": {"type": "integer"},
        "actual_usd": _USD,
        "expected_usd": _USD,
        "band_usd": {"type": "array", "items": _USD, "minItems": 2, "maxItems": 2},
        "excess_usd": _USD,
        "z": {"type": "number", "description": "deviation in robust standard deviations"},
        "causes": {
            "type": "array",
            "description": "ranked: where the excess sits, then how it arose",
            "items": {
                "type": "object",
                "required": ["kind", "value", "excess_usd", "share", "detail"],
                "properties": {
                    "kind": {
                        "enum": [
                            "key",
                            "model",
                            "route",
                            "volume",
                            "cache",
                            "size",
                            "mix",
                            "escalation",
                            "errors",
                        ]
                    },
                    "value": {"type": "string"},
                    "excess_usd": _USD,
                    "share": {"type": "number", "description": "of the excess, 0..1"},
                    "detail": {"type": "string"},
                },
            },
        },
        "suppressed_by": {"type": ["string", "null"]},
        "feedback": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["verdict", "note", "at"],
                    "properties": {
                        "verdict": {"enum": list(VERDICTS)},
                        "note": {"type": "string"},
                        "at": _TIME,
                    },
                },
            ]
        },
    },
}
_REF: JsonSchema = {"$ref": "#/components/schemas/Anomaly"}
_ID = Param("id", "The anomaly's id, as listed.")
_LIST_JSON: JsonSchema = {
    "type": "object",
    "required": ["object", "report", "since", "team", "data"],
    "properties": {
        "object": {"const": "list"},
        "report": {"const": "anomalies"},
        "since": _TIME,
        "team": {"type": ["string", "null"]},
        "data": {"type": "array", "items": _REF},
    },
}


def anomaly_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "GET",
            "/admin/anomalies",
            list_anomalies,
            "List spend anomalies, newest first",
            "anomalies",
            (
                Reply(
                    200,
                    "The anomalies that started since `since`, and those still open.",
                    media={
                        "application/json": _LIST_JSON,
                        "text/csv": {"type": "string"},
                        "text/plain": {"type": "string"},
                    },
                ),
            ),
            query=(
                Param("team", "Only this team's anomalies."),
                Param("since", f"Since when ({SINCE_HELP}; default {DEFAULT_SINCE})."),
                format_param("json"),
            ),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/anomalies/{id}",
            get_anomaly,
            "One spend anomaly",
            "anomalies",
            (Reply(200, "The anomaly, with its causes and feedback.", _REF),),
            path_params=(_ID,),
            errors=(404,),
            access="reporting",
        ),
        Endpoint(
            "POST",
            "/admin/anomalies/{id}/feedback",
            post_feedback,
            "Say whether an anomaly was expected or real",
            "anomalies",
            (Reply(200, "The anomaly with its feedback.", _REF),),
            description="`expected` (seasonal or planned) stops the alerts about it and "
            "suppresses anomalies of the same team, kind and leading cause for "
            "`anomalies.expected_suppress_days`; `real` confirms it. The latest verdict counts.",
            body=FeedbackSpec,
            path_params=(_ID,),
            errors=(404,),
        ),
    )
