"""Approvals in the store: a principal's asks for requests over an approval policy's limit, and
admins' decisions on them (`rediskeys.approval_*`, one slot).

A request over a limit calls `ask`: one script uses the principal's current approval for that
model and policy (approved: a use is counted; pending: the ask is counted on it) or records a
new pending one, so repeated requests never flood the list. `decide` approves (for a window,
optionally a number of requests) or denies. The admin API, `spendgate approvals` and every
gateway replica share them, on memory://, local:// and redis:// alike.
"""

from __future__ import annotations

import importlib.resources
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from gateway import rediskeys
from gateway.types import Principal, nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

Status = Literal["pending", "approved", "denied", "expired"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "denied", "expired")
Decision = Literal["approved", "denied"]
_LUA = importlib.resources.files("gateway.policies") / "lua"
LIST_LIMIT = 1000


class Superseded(Exception):
    """The approval is no longer its principal's current one (a later ask replaced it)."""


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    status: str  # as stored: pending | approved | denied
    policy: str
    key_id: str
    key_name: str | None
    team: str
    project: str | None
    environment: str | None
    model: str
    reason: str  # which limit the request was over
    cost_nano: int  # the largest estimated worst-case cost asked for
    asks: int
    created_ms: int
    last_ms: int
    expires_ms: int  # pending: unanswered until; approved: window end; denied: stands until
    requests: int | None  # approved: how many requests it covers (None: any number)
    used: int
    decided_ms: int | None = None
    decided_by: str | None = None
    note: str | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Approval:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(
            id=d["id"],
            status=d["status"],
            policy=d["policy"],
            key_id=d["key_id"],
            key_name=_text(d.get("key_name")),
            team=d["team"],
            project=_text(d.get("project")),
            environment=_text(d.get("environment")),
            model=d["model"],
            reason=d["reason"],
            cost_nano=int(d["cost_nano"]),
            asks=int(d["asks"]),
            created_ms=int(d["created_ms"]),
            last_ms=int(d["last_ms"]),
            expires_ms=int(d["expires_ms"]),
            requests=None if int(d["requests"]) < 0 else int(d["requests"]),
            used=int(d["used"]),
            decided_ms=None if d.get("decided_ms") is None else int(d["decided_ms"]),
            decided_by=_text(d.get("decided_by")),
            note=_text(d.get("note")),
        )

    def status_at(self, now_ms: int) -> Status:
        """What the approval is worth now: a pending one unanswered past its time, or an
        approval whose window or request count ran out, is `expired`."""
        if self.status == "denied":
            return "denied"
        used_up = self.requests is not None and self.used >= self.requests
        if self.expires_ms <= now_ms or (self.status == "approved" and used_up):
            return "expired"
        return "pending" if self.status == "pending" else "approved"

    def to_dict(self, now_ms: int) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status_at(now_ms),
            "policy": self.policy,
            "key_id": self.key_id,
            "key_name": self.key_name,
            "team": self.team,
            "project": self.project,
            "environment": self.environment,
            "model": self.model,
            "reason": self.reason,
            "estimated_cost_usd": nano_to_usd_str(self.cost_nano),
            "asks": self.asks,
            "asked_at": iso(self.created_ms),
            "last_asked_at": iso(self.last_ms),
            "expires_at": iso(self.expires_ms),
            "decided_at": None if self.decided_ms is None else iso(self.decided_ms),
            "decided_by": self.decided_by,
            "note": self.note,
            "requests": self.requests,
            "used": self.used,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the store said about one request over a limit."""

    status: Literal["approved", "pending", "denied"]
    id: str
    new: bool  # a new approval was asked for (not a repeat of a pending one)


class ApprovalStore:
    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._ask: AsyncScript = redis.register_script((_LUA / "ask.lua").read_text())
        self._decide: AsyncScript = redis.register_script((_LUA / "decide.lua").read_text())

    async def ask(
        self,
        principal: Principal,
        model: str,
        policy: str,
        reason: str,
        cost_nano: int,
        pending_ttl_s: float,
    ) -> Verdict:
        """Use the principal's approval for this model and policy, or ask for one."""
        record = {
            "policy": policy,
            "key_id": principal.key_id,
            "key_name": principal.name,
            "team": principal.team,
            "project": principal.project,
            "environment": principal.environment,
            "model": model,
            "reason": reason,
        }
        now_ms = int(self.clock() * 1000)
        status, approval_id, created = await self._ask(
            keys=[
                rediskeys.approval_records(),
                rediskeys.approval_current(),
                rediskeys.approval_index(),
            ],
            args=[
                f"{principal.key_id}|{model}|{policy}",
                "apr_" + os.urandom(8).hex(),
                now_ms,
                int(pending_ttl_s * 1000),
                orjson.dumps(record),
                cost_nano,
                rediskeys.APPROVAL_RETENTION_S * 1000,
            ],
        )
        return Verdict(_text(status), _text(approval_id), bool(int(created)))

    async def decide(
        self,
        approval_id: str,
        decision: Decision,
        *,
        window_s: float,
        requests: int | None = None,
        by: str = "admin",
        note: str = "",
    ) -> Approval | None:
        """Approve for `window_s` (and at most `requests` requests), or deny for `window_s`.
        None if there is no such approval; Superseded if a later ask replaced it."""
        now_ms = int(self.clock() * 1000)
        reply = await self._decide(
            keys=[rediskeys.approval_records(), rediskeys.approval_current()],
            args=[
                approval_id,
                decision,
                now_ms,
                now_ms + int(window_s * 1000),
                -1 if requests is None else requests,
                by,
                note,
            ],
        )
        outcome = _text(reply[0])
        if outcome == "missing":
            return None
        approval = Approval.from_json(reply[1])
        if outcome == "superseded":
            current = await self.redis.hget(
                rediskeys.approval_current(),
                f"{approval.key_id}|{approval.model}|{approval.policy}",
            )
            later = f" by {_text(current)}" if current else ""
            raise Superseded(f"approval {approval_id} was superseded{later}: decide that one")
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        raw = await self.redis.hget(rediskeys.approval_records(), approval_id)
        return None if raw is None else Approval.from_json(raw)

    async def list(
        self,
        *,
        status: Status | None = None,
        team: str | None = None,
        since_s: float | None = None,
    ) -> list[Approval]:
        """Newest first, at most LIST_LIMIT, filtered by status now and team."""
        low = "-inf" if since_s is None else int(since_s * 1000)
        ids = await self.redis.zrevrangebyscore(
            rediskeys.approval_index(), "+inf", low, start=0, num=LIST_LIMIT
        )
        if not ids:
            return []
        raw = await self.redis.hmget(rediskeys.approval_records(), [_text(i) for i in ids])
        now_ms = int(self.clock() * 1000)
        found = [Approval.from_json(r) for r in raw if r is not None]
        found = [a for a in found if team is None or a.team == team]
        return [a for a in found if status is None or a.status_at(now_ms) == status]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _text(value: object) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    return value if not isinstance(value, dict | list) else None  # cjson's null is {} in Lua
