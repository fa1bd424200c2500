"""Loading past spend into the ledger: imported events are appended to their team's spend stream,
as the settle script and posted external costs are, so the aggregator rolls them up exactly once
into the same rollups as live traffic (reports, forecasts and baselines cannot tell them apart).
Each event goes in at most once: its id joins a set per team and UTC day in the same script call
that appends it (`lua/import.lua`), so importing a file twice, or an interrupted import again,
adds nothing more.

What an import does not do: charge budgets (their counters are for enforcing the current period,
not for history), or keep events older than the daily rollups live (400 days: they would show in
no report); events older than 35 days reach the daily rollups only, as the hourly ones are gone.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import rediskeys
from gateway.rollupformat import hour_bucket
from gateway.types import MAX_EXACT, SpendEvent, nano_to_usd_str

if TYPE_CHECKING:
    from redis.asyncio import Redis

KINDS = frozenset({"request", "external", "import"})
FUTURE_SLACK_MS = 86_400_000  # an event may be dated at most a day ahead (time zones, skew)
_CHUNK = 500  # events per script call
_DAY_MS = 86_400_000
_LUA = importlib.resources.files("gateway.history") / "lua" / "import.lua"


@dataclass
class TeamTotals:
    events: int = 0  # given
    new: int = 0  # appended (in a dry run: would be)
    duplicate: int = 0  # imported before (or given twice)
    too_old: int = 0  # older than the daily rollups are kept: they would show nowhere
    cost_nano: int = 0  # of the new ones
    tokens: int = 0  # of the new ones
    first_day: str | None = None  # of the new ones, YYYY-MM-DD
    last_day: str | None = None

    def add_new(self, event: SpendEvent) -> None:
        self.new += 1
        self.cost_nano += event.cost_nano
        self.tokens += event.prompt_tokens + event.completion_tokens
        day = _iso_day(hour_bucket(event.ts_ms)[:8])
        self.first_day = min(self.first_day or day, day)
        self.last_day = max(self.last_day or day, day)

    def merge(self, other: TeamTotals) -> None:
        self.events += other.events
        self.new += other.new
        self.duplicate += other.duplicate
        self.too_old += other.too_old
        self.cost_nano += other.cost_nano
        self.tokens += other.tokens
        days = [d for d in (self.first_day, self.last_day, other.first_day, other.last_day) if d]
        self.first_day, self.last_day = (min(days), max(days)) if days else (None, None)


@dataclass
class ImportSummary:
    dry_run: bool
    teams: dict[str, TeamTotals] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # source rows not imported, by reason

    def team(self, name: str) -> TeamTotals:
        return self.teams.setdefault(name, TeamTotals())

    def merge(self, other: ImportSummary) -> None:
        for name, totals in other.teams.items():
            self.team(name).merge(totals)
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "teams": {
                name: {
                    "events": t.events,
                    "new": t.new,
                    "duplicate": t.duplicate,
                    "too_old": t.too_old,
                    "cost_usd": nano_to_usd_str(t.cost_nano),
                    "cost_nano": t.cost_nano,
                    "tokens": t.tokens,
                    "first_day": t.first_day,
                    "last_day": t.last_day,
                }
                for name, t in sorted(self.teams.items())
            },
            "skipped": dict(sorted(self.skipped.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportSummary:
        summary = cls(bool(data["dry_run"]), skipped=dict(data.get("skipped") or {}))
        for name, t in data["teams"].items():
            summary.teams[name] = TeamTotals(
                t["events"],
                t["new"],
                t["duplicate"],
                t["too_old"],
                t["cost_nano"],
                t["tokens"],
                t["first_day"],
                t["last_day"],
            )
        return summary


def problems(events: Iterable[SpendEvent], teams: Collection[str], now_ms: int) -> list[str]:
    """Why these events may not be imported (none: they may): teams the config does not know,
    events dated in the future, amounts out of range. Checked before anything is written."""
    unknown: dict[str, int] = {}
    found = []
    for e in events:
        if e.team not in teams:
            unknown[e.team] = unknown.get(e.team, 0) + 1
        elif e.ts_ms > now_ms + FUTURE_SLACK_MS:
            found.append(f"event {e.event_id} of team {e.team} is dated in the future")
        elif e.kind not in KINDS:
            found.append(f"event {e.event_id}: unknown kind {e.kind!r}")
        elif not -MAX_EXACT < e.cost_nano < MAX_EXACT or (e.kind != "external" and e.cost_nano < 0):
            found.append(f"event {e.event_id}: cost out of range")
        elif not e.event_id:
            found.append(f"an event of team {e.team} has no id")
    found += [
        f"team {team!r} is not in the config ({count} events): add it, or map the rows to "
        f"configured teams (configured: {', '.join(sorted(teams)) or 'none'})"
        for team, count in sorted(unknown.items())
    ]
    return found


async def import_events(
    redis: Redis, events: Sequence[SpendEvent], now_s: float, *, dry_run: bool = False
) -> ImportSummary:
    """Append `events` not imported before to their teams' streams (checked with `problems`
    first); with `dry_run`, only count what would be. Raises RedisError / OSError."""
    summary = ImportSummary(dry_run)
    groups: dict[tuple[str, str], list[SpendEvent]] = {}
    seen: set[str] = set()
    for e in events:
        totals = summary.team(e.team)
        totals.events += 1
        day = hour_bucket(e.ts_ms)[:8]
        if _expires_at(e.ts_ms) <= now_s:
            totals.too_old += 1
        elif e.event_id in seen:
            totals.duplicate += 1
        else:
            seen.add(e.event_id)
            groups.setdefault((e.team, day), []).append(e)
    script = redis.register_script(_LUA.read_text())
    for (team, day), group in sorted(groups.items()):
        ttl = max(1, int(_expires_at(group[0].ts_ms) - now_s))
        for i in range(0, len(group), _CHUNK):
            chunk = group[i : i + _CHUNK]
            args: list[str | int] = [ttl, "1" if dry_run else "0"]
            for e in chunk:
                fields = e.to_flat()
                args += [e.event_id, len(fields) // 2, *fields]
            keys = [rediskeys.imported_events(team, day), rediskeys.events_stream(team)]
            fresh = await script(keys=keys, args=args)
            totals = summary.team(team)
            for e, flag in zip(chunk, fresh, strict=True):
                if int(flag):
                    totals.add_new(e)
                else:
                    totals.duplicate += 1
    if not dry_run:
        appended = sorted(name for name, t in summary.teams.items() if t.new)
        if appended:  # the aggregator finds streams through this registry
            await redis.sadd(rediskeys.streams_registry(), *appended)
    return summary


def _expires_at(ts_ms: int) -> float:
    """When the daily rollup of the event's day is dropped (epoch seconds)."""
    day_end_ms = ts_ms - ts_ms % _DAY_MS + _DAY_MS
    return day_end_ms / 1000 + rediskeys.ROLLUP_DAILY_TTL_S


def _iso_day(bucket: str) -> str:
    return f"{bucket[:4]}-{bucket[4:6]}-{bucket[6:8]}"
