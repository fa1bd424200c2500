"""The admin API for approvals: list the asks of requests over an approval policy's limit, read
one, approve it (for a window and optionally a number of requests) or deny it.

    GET  /admin/approvals?status=pending&team=T
    GET  /admin/approvals/{id}
    POST /admin/approvals/{id}/approve  {"window_s": 3600, "requests": 10, "by": "...", "note": ""}
    POST /admin/approvals/{id}/deny     {"by": "...", "note": "..."}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.app.admin import Endpoint, Param, Reply, json_response
from gateway.app.state import CLOCK, LIVE_CONFIG, REDIS
from gateway.config.checks import Int, JsonSchema, Number, Spec, Str, checks
from gateway.errors import InvalidRequest, NotFound
from gateway.policies.approvals import (
    STATUSES,
    Approval,
    ApprovalStore,
    Decision,
    Superseded,
)

_YEAR_S = 366 * 86400.0
_BY = Str(max_len=100)
_NOTE = Str(allow_empty=True, max_len=1000)


@dataclass(frozen=True, kw_only=True)
class ApproveSpec(Spec):
    """An approval: for a window, and optionally for a number of requests (whichever ends
    first)."""

    window_s: float | None = field(
        default=None,
        metadata=checks(
            Number(positive=True, max=_YEAR_S),
            doc="How long it lasts, in seconds (default: the policy's grant_s).",
        ),
    )
    requests: int | None = field(
        default=None,
        metadata=checks(Int(min=1), doc="How many requests it covers (default: any number)."),
    )
    by: str = field(default="admin", metadata=checks(_BY, doc="Who decided, for the record."))
    note: str = field(default="", metadata=checks(_NOTE, doc="Why, for the record."))


@dataclass(frozen=True, kw_only=True)
class DenySpec(Spec):
    """A denial: it stands for policies.approval_ttl_s, then the principal may ask again."""

    by: str = field(default="admin", metadata=checks(_BY, doc="Who decided, for the record."))
    note: str = field(
        default="", metadata=checks(_NOTE, doc="Why (the requester's 403 message shows it).")
    )


def _store(request: web.Request) -> ApprovalStore:
    return ApprovalStore(request.app[REDIS], request.app[CLOCK])


def _now_ms(request: web.Request) -> int:
    return int(request.app[CLOCK]() * 1000)


async def list_approvals(request: web.Request, _: None) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}", param="status")
    found = await _store(request).list(status=status, team=request.query.get("team") or None)
    now = _now_ms(request)
    return json_response({"object": "list", "data": [a.to_dict(now) for a in found]})


async def get_approval(request: web.Request, _: None) -> web.Response:
    approval_id = request.match_info["id"]
    found = await _store(request).get(approval_id)
    if found is None:
        raise _not_found(approval_id)
    return json_response(found.to_dict(_now_ms(request)))


async def approve(request: web.Request, body: ApproveSpec) -> web.Response:
    config = request.app[LIVE_CONFIG].current
    approval_id = request.match_info["id"]
    store = _store(request)
    found = await store.get(approval_id)
    if found is None:
        raise _not_found(approval_id)
    window = body.window_s if body.window_s is not None else config.policies.grant_s(found.policy)
    decided = await _decide(
        store, approval_id, "approved", window, body.requests, body.by, body.note
    )
    return json_response(decided.to_dict(_now_ms(request)))


async def deny(request: web.Request, body: DenySpec) -> web.Response:
    config = request.app[LIVE_CONFIG].current
    approval_id = request.match_info["id"]
    window = config.policies.approval_ttl_s
    decided = await _decide(
        _store(request), approval_id, "denied", window, None, body.by, body.note
    )
    return json_response(decided.to_dict(_now_ms(request)))


async def _decide(
    store: ApprovalStore,
    approval_id: str,
    decision: Decision,
    window_s: float,
    requests: int | None,
    by: str,
    note: str,
) -> Approval:
    try:
        decided = await store.decide(
            approval_id, decision, window_s=window_s, requests=requests, by=by, note=note
        )
    except Superseded as exc:
        raise InvalidRequest(str(exc), param="id", code="approval_superseded") from None
    if decided is None:
        raise _not_found(approval_id)
    return decided


def _not_found(approval_id: str) -> NotFound:
    return NotFound(f"no approval {approval_id!r}", param="id", code="approval_not_found")


def _nullable(kind: str) -> JsonSchema:
    return {"type": [kind, "null"]}


_TIME: JsonSchema = {"type": "string", "format": "date-time"}
APPROVAL_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "An ask for requests over an approval policy's limit (docs/governance.md).",
    "required": [
        *("id", "status", "policy", "key_id", "key_name", "team", "project", "environment"),
        *("model", "reason", "estimated_cost_usd", "asks", "asked_at", "last_asked_at"),
        *("expires_at", "decided_at", "decided_by", "note", "requests", "used"),
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^apr_[0-9a-f]{16}$"},
        "status": {
            "enum": list(STATUSES),
            "description": "expired: unanswered in time, or its window or requests ran out",
        },
        "policy": {"type": "string"},
        "key_id": {"type": "string", "description": "the principal: the key that asked"},
        "key_name": _nullable("string"),
        "team": {"type": "string"},
        "project": _nullable("string"),
        "environment": _nullable("string"),
        "model": {"type": "string", "description": "the model the requests ask for"},
        "reason": {"type": "string", "description": "which limit the request was over"},
        "estimated_cost_usd": {
            "type": "string",
            "description": "the largest worst-case cost estimate of the asks, exact USD",
        },
        "asks": {"type": "integer", "description": "requests refused while it was pending"},
        "asked_at": _TIME,
        "last_asked_at": _TIME,
        "expires_at": {
            **_TIME,
            "description": "pending: unanswered until; approved: its window's end; denied: "
            "it stands until",
        },
        "decided_at": {"type": ["string", "null"], "format": "date-time"},
        "decided_by": _nullable("string"),
        "note": _nullable("string"),
        "requests": {**_nullable("integer"), "description": "approved for this many requests"},
        "used": {"type": "integer", "description": "requests the approval let through"},
    },
}
_REF: JsonSchema = {"$ref": "#/components/schemas/Approval"}
_LIST: JsonSchema = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _REF}},
}
_ID = Param("id", "The approval's id (apr_ + 16 hex digits), as the 403 and the list give it.")


def approval_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "GET",
            "/admin/approvals",
            list_approvals,
            "List approvals",
            "approvals",
            (Reply(200, "Newest first (at most 1000), asked in the last 90 days.", _LIST),),
            query=(
                Param("status", "Only those with this status now.", {"enum": list(STATUSES)}),
                Param("team", "Only this team's."),
            ),
        ),
        Endpoint(
            "GET",
            "/admin/approvals/{id}",
            get_approval,
            "Read an approval",
            "approvals",
            (Reply(200, "The approval.", _REF),),
            path_params=(_ID,),
            errors=(404,),
        ),
        Endpoint(
            "POST",
            "/admin/approvals/{id}/approve",
            approve,
            "Approve",
            "approvals",
            (Reply(200, "The approval, approved.", _REF),),
            description="The key's requests to the model that the policy stops proceed for "
            "`window_s` (default: the policy's `grant_s`) or `requests` requests, whichever "
            "ends first. Approving again replaces the grant; a denied approval may be "
            "approved. Only the latest approval of a key, model and policy can be decided (400 "
            "`approval_superseded` otherwise).",
            body=ApproveSpec,
            path_params=(_ID,),
            errors=(404,),
        ),
        Endpoint(
            "POST",
            "/admin/approvals/{id}/deny",
            deny,
            "Deny",
            "approvals",
            (Reply(200, "The approval, denied.", _REF),),
            description="The key's requests get 403 `approval_denied` for "
            "`policies.approval_ttl_s`; denying an approved one withdraws it.",
            body=DenySpec,
            path_params=(_ID,),
            errors=(404,),
        ),
    )
