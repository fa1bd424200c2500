"""The admin API for history: `POST /admin/import` appends past spend events to the ledger, each
at most once by its id (`history.imports`). What `spendgate import` sends an in-process-store
gateway, after reading an archive or a FOCUS file itself: the events, as the spend stream and
the archive files hold them (`SpendEvent.to_fields()`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from redis.exceptions import RedisError

from gateway.app.admin import Endpoint, Reply, json_response
from gateway.app.state import CLOCK, LIVE_CONFIG, REDIS
from gateway.config.checks import Bool, JsonSchema, ListOf, Spec, Str, StrMap, checks
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.history.imports import import_events, problems
from gateway.types import SpendEvent

MAX_EVENTS = 5_000  # per request: `spendgate import` sends 1,000


@dataclass(frozen=True, kw_only=True)
class ImportSpec(Spec):
    """Past spend events for the ledger."""

    events: list[dict[str, str] | None] = field(
        metadata=checks(
            ListOf(StrMap(Str(max_len=64), Str(allow_empty=True, max_len=20_000))),
            doc="Spend events as the archive files hold them: each field of the event as a "
            "string (event_id, ts_ms, team, kind, cost_nano, ...). An event whose id was "
            "imported before is not added again.",
        )
    )
    dry_run: bool = field(
        default=False,
        metadata=checks(Bool(), doc="Only count what would be imported; change nothing."),
    )


async def import_history(request: web.Request, body: ImportSpec) -> web.Response:
    if len(body.events) > MAX_EVENTS:
        raise InvalidRequest(f"events: at most {MAX_EVENTS} per request", param="events")
    events = []
    for i, fields in enumerate(body.events):
        try:
            events.append(SpendEvent.from_fields(fields or {}))
        except (TypeError, ValueError) as exc:
            message = f"events[{i}]: not a spend event ({exc})"
            raise InvalidRequest(message, param=f"events[{i}]") from None
    now = request.app[CLOCK]()
    found = problems(events, request.app[LIVE_CONFIG].current.teams, int(now * 1000))
    if found:
        raise InvalidRequest("; ".join(found[:20]), param="events", code="import_refused")
    try:
        summary = await import_events(request.app[REDIS], events, now, dry_run=body.dry_run)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    return json_response(summary.to_dict())


_TOTALS: JsonSchema = {
    "type": "object",
    "properties": {
        "events": {"type": "integer", "description": "events given"},
        "new": {"type": "integer", "description": "appended (in a dry run: would be)"},
        "duplicate": {"type": "integer", "description": "imported before, not added again"},
        "too_old": {
            "type": "integer",
            "description": "older than the daily rollups are kept (400 days): not added",
        },
        "cost_usd": {"type": "string", "description": "exact USD of the new events"},
        "cost_nano": {"type": "integer"},
        "tokens": {"type": "integer"},
        "first_day": {"type": ["string", "null"], "format": "date"},
        "last_day": {"type": ["string", "null"], "format": "date"},
    },
}
_SUMMARY: JsonSchema = {
    "type": "object",
    "required": ["dry_run", "teams", "skipped"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "teams": {"type": "object", "additionalProperties": _TOTALS},
        "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}


def import_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "POST",
            "/admin/import",
            import_history,
            "Import past spend events into the ledger",
            "history",
            (Reply(200, "What was imported (or would be), per team.", _SUMMARY),),
            description="Events are appended to their teams' spend streams and rolled up by "
            "the aggregator like live ones. Refused as a whole (400 `import_refused`) when an "
            "event names a team the config does not have or is dated more than a day ahead. "
            "See docs/ledger.md#importing-history.",
            body=ImportSpec,
            errors=(503,),
        ),
    )
