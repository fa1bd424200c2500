"""Reserve and settle against budgets, and append spend events: one Lua call each.

`reserve` holds a request's worst-case cost against every budget that applies (releasing the
team's expired reservations first); `settle` gives the reservation back, adds the actual cost and
appends the spend event to the team's stream, once per event id. Redis failures propagate as
`redis.exceptions.RedisError` / `OSError`: the caller decides fail-open or closed and spools
settles it could not deliver (`Spool`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.budgets.leases import Lease, LeaseBook, LeaseKey
from gateway.budgets.periods import end_of_period_id, hour_id, period_at, period_end, period_id
from gateway.config.model import BudgetConfig
from gateway.flights import Flights
from gateway.store.connect import batcher_for
from gateway.types import MAX_EXACT, SpendEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

# Increments are 64-bit HINCRBYs; the scripts' comparisons are exact below MAX_EXACT (types.py).

log = logging.getLogger("spendgate.budgets")


def load_script(name: str) -> str:
    return resources.files("gateway.budgets").joinpath("lua", name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget in one period: what is spent and what requests in flight hold."""

    budget: BudgetConfig
    period_id: str
    period_end: datetime | None  # None for "total"
    spent_nano: int = 0
    reserved_nano: int = 0
    spent_tokens: int = 0
    reserved_tokens: int = 0

    @property
    def remaining_nano(self) -> int | None:
        """Limit minus spent minus reserved; negative when a soft budget is overspent."""
        limit = self.budget.limit_nano
        return None if limit is None else limit - self.spent_nano - self.reserved_nano

    @property
    def remaining_tokens(self) -> int | None:
        limit = self.budget.limit_tokens
        return None if limit is None else limit - self.spent_tokens - self.reserved_tokens

    @property
    def pct(self) -> float:
        """Spent as a percentage of the limit: the higher of the USD and the token figure."""
        usd, tokens = self.budget.limit_nano, self.budget.limit_tokens
        if tokens is None:
            return 0.0 if usd is None else _pct(self.spent_nano, usd)
        by_tokens = _pct(self.spent_tokens, tokens)
        return by_tokens if usd is None else max(_pct(self.spent_nano, usd), by_tokens)


def _pct(spent: int, limit: int) -> float:
    if limit <= 0:
        return 100.0 if spent > 0 else 0.0
    return 100.0 * spent / limit


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of `reserve`. Settle with it, so the request is charged to the periods it
    reserved in even if a period rolled over meanwhile."""

    ok: bool
    team: str
    request_id: str
    budgets: tuple[BudgetConfig, ...]
    period_ids: tuple[str, ...]
    status: tuple[BudgetStatus, ...]  # per budget, after this reservation (before, if refused)
    amount_nano: int = 0
    amount_tokens: int = 0
    deadline_ms: int = 0
    exceeded: BudgetConfig | None = None  # the budget that refused (block before downgrade)
    retry_after_s: int | None = None  # until the exceeded budget's period resets; None: total
    released_expired: int = 0  # expired reservations of the team this call released
    lease: Lease | None = None  # held in this process's lease, not in Redis (see leases.py)

    @property
    def counters(self) -> tuple[str, ...]:
        return tuple(
            rediskeys.budget_counter(self.team, b.name, pid)
            for b, pid in zip(self.budgets, self.period_ids, strict=True)
        )

    @property
    def exceeded_status(self) -> BudgetStatus | None:
        for status in self.status:
            if status.budget is self.exceeded:
                return status
        return None

    @property
    def remaining_nano(self) -> int | None:
        """The tightest remaining USD budget with this request's worst case held (never below
        0); None without USD budgets."""
        return self.remaining_after(self.amount_nano, self.amount_tokens)[0]

    @property
    def remaining_tokens(self) -> int | None:
        return self.remaining_after(self.amount_nano, self.amount_tokens)[1]

    def remaining_after(self, cost_nano: int, tokens: int) -> tuple[int | None, int | None]:
        """(USD, tokens) the tightest budgets have left once this request is charged what it
        actually cost instead of the worst case it holds (never below 0; None: no such limit).
        Every budget held the same amount, so the tightest stays the tightest."""
        nanos = [s.remaining_nano for s in self.status if s.remaining_nano is not None]
        counts = [s.remaining_tokens for s in self.status if s.remaining_tokens is not None]
        return (
            max(0, min(nanos) + self.amount_nano - cost_nano) if nanos else None,
            max(0, min(counts) + self.amount_tokens - tokens) if counts else None,
        )

    @property
    def soft_exceeded(self) -> tuple[BudgetConfig, ...]:
        """`alert` budgets this reservation took over their limit (served anyway)."""
        return tuple(
            s.budget
            for s in self.status
            if s.budget.on_exceed == "alert"
            and (
                (s.remaining_nano is not None and s.remaining_nano < 0)
                or (s.remaining_tokens is not None and s.remaining_tokens < 0)
            )
        )


@dataclass(frozen=True, slots=True)
class SettleResult:
    duplicate: bool  # the event id was settled before: nothing changed
    stream_id: str | None = None
    released: bool = False  # the reservation was still held (not yet released by its deadline)
    crossed: tuple[tuple[BudgetConfig, int], ...] = ()  # (budget, threshold %) newly reached
    status: tuple[BudgetStatus, ...] = ()  # per budget, after this settle

    @property
    def spent_nano(self) -> dict[str, int]:
        return {s.budget.name: s.spent_nano for s in self.status}

    @property
    def remaining_nano(self) -> int | None:
        values = [s.remaining_nano for s in self.status if s.remaining_nano is not None]
        return max(0, min(values)) if values else None


@dataclass(slots=True)  # one per settle: not frozen, which is cheaper to make
class _SettleCall:
    """One settle script call, built, and how to read its reply."""

    keys: list[str]
    args: list[str | int | bytes]
    budgets: tuple[BudgetConfig, ...]
    period_ids: tuple[str, ...]
    ends: tuple[datetime | None, ...]

    def result(self, raw: Any) -> SettleResult:
        if int(raw[0]) == 0:
            return SettleResult(duplicate=True)
        status = _statuses(self.budgets, self.period_ids, self.ends, raw[3])
        flat = [int(v) for v in raw[4]]
        crossed = tuple(
            (self.budgets[i - 1], t) for i, t in zip(flat[::2], flat[1::2], strict=True)
        )
        return SettleResult(False, _text(raw[1]), int(raw[2]) == 1, crossed, status)


_LAYOUTS = 1024  # settle layouts kept (teams x budget sets x periods x hours in use)


@dataclass(frozen=True, slots=True)
class _SettleLayout:
    """What every settle of one team's budgets in one period and hour shares, worked out once:
    a settle only adds its request's ids, amounts and event (and the TTLs, from the clock)."""

    counters: tuple[str, ...]  # the budgets' counter keys
    shared: tuple[str, ...]  # after the reservation's key: deadlines, settled set, stream, alerted
    budget_args: tuple[tuple[int, int, str, int | None], ...]  # limits, thresholds, expiry (ms)
    ends: tuple[datetime | None, ...]

    @classmethod
    def of(
        cls, team: str, budgets: tuple[BudgetConfig, ...], period_ids: tuple[str, ...], hour: str
    ) -> _SettleLayout:
        _check_team(team, budgets)
        ends = tuple(end_of_period_id(p) for p in period_ids)
        pairs = list(zip(budgets, period_ids, strict=True))
        shared = [
            rediskeys.reservation_deadlines(team),
            rediskeys.settled_events(team, hour),
            rediskeys.events_stream(team),
        ]
        shared += [rediskeys.alerted_thresholds(team, b.name, p) for b, p in pairs]
        return cls(
            tuple(rediskeys.budget_counter(team, b.name, p) for b, p in pairs),
            tuple(shared),
            tuple(
                (
                    _limit(b.limit_nano),
                    _limit(b.limit_tokens),
                    _thresholds_text(b.thresholds),
                    _expire_at_ms(end),
                )
                for b, end in zip(budgets, ends, strict=True)
            ),
            ends,
        )


class BudgetLedger:
    """Reserve / settle / status over one Redis client. The only money state it keeps is the
    leases it holds (leases.py), given back by `close_leases`."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Callable[[], float] = time.time,
        lease_fraction: float = 0.0,
        lease_window_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._clock = clock
        # register_script: calls use EVALSHA, falling back to loading the script once.
        self._reserve: AsyncScript = redis.register_script(load_script("reserve.lua"))
        self._settle: AsyncScript = redis.register_script(load_script("settle.lua"))
        self._registered: set[str] = set()  # teams whose stream is in the registry
        self._registering: Flights[str, None] = Flights()  # the SADD in flight, per team
        self._batch = batcher_for(redis)
        self._layouts: dict[tuple[Any, ...], _SettleLayout] = {}
        self.leases = LeaseBook(
            self._grant_lease, self._release_lease, clock, lease_fraction, lease_window_s
        )

    def configure_leases(self, fraction: float, window_s: float) -> None:
        """Lease `fraction` of what the tightest budget has left (0: never), for `window_s`."""
        self.leases.configure(fraction, window_s)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def reserve(
        self,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        amount_nano: int,
        amount_tokens: int,
        ttl_s: float,
        *,
        enforce_downgrade: bool = True,
    ) -> Reservation:
        """Hold `amount_*` against every budget in `budgets` (all of `team`), or nothing if any
        block/downgrade budget would go over. No budgets: no Redis call at all.

        `enforce_downgrade=False` is for the second reserve of a request that a `downgrade`
        budget refused, now for the cheaper model: downgrade budgets then only count (as
        `alert` ones do) and `block` budgets still hold.

        Reserves made in the same turn of the event loop go to Redis together, pipelined
        (store/batch.py; each script still runs atomically, in call order).
        """
        _check_amount(amount_nano, "amount_nano")
        _check_amount(amount_tokens, "amount_tokens")
        now_ms = int(self._clock() * 1000)
        deadline_ms = now_ms + max(1, int(ttl_s * 1000))
        if not budgets:
            return Reservation(True, team, request_id, (), (), (), amount_nano, amount_tokens)
        budgets = tuple(budgets)
        _check_team(team, budgets)
        periods = [period_at(b.period, now_ms) for b in budgets]
        period_ids = tuple(pid for pid, _ in periods)
        ends = tuple(end for _, end in periods)
        lease_key = (team, budgets, period_ids)
        leasing = enforce_downgrade and self.leases.divisor > 0
        if leasing:
            lease = await self.leases.acquire(lease_key, ends, amount_nano, amount_tokens, ttl_s)
            if lease is not None:
                return _leased(lease, request_id, amount_nano, amount_tokens)
        keys = self._reserve_keys(team, request_id, budgets, period_ids)
        hold_ms = deadline_ms - now_ms + rediskeys.RESERVATION_GRACE_S * 1000
        args: list[str | int] = [request_id, now_ms, deadline_ms, amount_nano, amount_tokens]
        args.append(hold_ms)
        args += _budget_args(budgets, ends, now_ms, enforce_downgrade)
        raw = await self._queue_reserve(keys, args)
        code, failed, released = int(raw[0]), int(raw[1]), int(raw[2])
        exceeded, retry = None, None
        if code == 0:
            exceeded = budgets[failed - 1]
            end = ends[failed - 1]
            retry = None if end is None else max(1, math.ceil(end.timestamp() - now_ms / 1000))
        status = _statuses(budgets, period_ids, ends, raw[3:])
        if leasing:
            self.leases.observed(lease_key, code == 1, status, amount_nano, amount_tokens)
        return Reservation(
            ok=code != 0,
            team=team,
            request_id=request_id,
            budgets=budgets,
            period_ids=period_ids,
            status=status,
            amount_nano=amount_nano,
            amount_tokens=amount_tokens,
            deadline_ms=deadline_ms,
            exceeded=exceeded,
            retry_after_s=retry,
            released_expired=released,
        )

    def reserve_leased(
        self,
        team: str,
        request_id: str,
        budgets: tuple[BudgetConfig, ...],
        amount_nano: int,
        amount_tokens: int,
    ) -> Reservation | None:
        """`reserve` without I/O, when an open lease has room for the request; else None (then
        call `reserve`, which may ask for a lease)."""
        if not budgets or self.leases.divisor <= 0:
            return None
        now_ms = int(self._clock() * 1000)
        period_ids = tuple(period_at(b.period, now_ms)[0] for b in budgets)
        lease = self.leases.take((team, budgets, period_ids), amount_nano, amount_tokens)
        return None if lease is None else _leased(lease, request_id, amount_nano, amount_tokens)

    @staticmethod
    def _reserve_keys(
        team: str, request_id: str, budgets: Sequence[BudgetConfig], period_ids: Sequence[str]
    ) -> list[str]:
        keys = [
            rediskeys.budget_counter(team, b.name, p)
            for b, p in zip(budgets, period_ids, strict=True)
        ]
        keys += [rediskeys.reservation(team, request_id), rediskeys.reservation_deadlines(team)]
        return keys

    async def _grant_lease(
        self,
        key: LeaseKey,
        lease_id: str,
        deadline_ms: int,
        divisor: float,
        min_nano: int,
        min_tokens: int,
    ) -> Sequence[Any]:
        """reserve.lua in lease mode (see LeaseBook)."""
        team, budgets, period_ids = key
        now_ms = int(self._clock() * 1000)
        ends = tuple(end_of_period_id(p) for p in period_ids)
        hold_ms = deadline_ms - now_ms + rediskeys.RESERVATION_GRACE_S * 1000
        args: list[str | int] = [lease_id, now_ms, deadline_ms, 0, 0, hold_ms]
        args += _budget_args(budgets, ends, now_ms, True)
        args += [repr(divisor), min_nano, min_tokens]
        keys = self._reserve_keys(team, lease_id, budgets, period_ids)
        return await self._queue_reserve(keys, args)  # type: ignore[no-any-return]

    def _lease_done(self, reservation: Reservation, event: SpendEvent, landed: bool) -> None:
        """A settle of a request held in a lease came back. A connection failure of a whole
        batch never gets here: those leases are left to their deadlines."""
        if reservation.lease is not None:
            worst = (reservation.amount_nano, reservation.amount_tokens)
            tokens = event.prompt_tokens + event.completion_tokens
            self.leases.settled(reservation.lease, worst, event.cost_nano, tokens, landed)

    async def _release_lease(self, lease: Lease) -> None:
        keys = [
            rediskeys.reservation(lease.team, lease.lease_id),
            rediskeys.reservation_deadlines(lease.team),
        ]
        try:
            await self._reserve(
                keys=keys, args=[lease.lease_id, int(self._clock() * 1000), 0, 0, 0, 0]
            )
        except (RedisError, OSError) as exc:
            log.warning(
                "lease %s not given back (%s): its deadline releases it", lease.lease_id, exc
            )

    async def close_leases(self) -> None:
        """Take no more requests in any lease and give back those whose settles all landed
        (shutdown: after the accountant drained)."""
        await self.leases.close_all()

    async def _queue_reserve(self, keys: list[str], args: list[str | int]) -> Any:
        """One reserve.lua call, pipelined with the other Redis commands of this loop turn."""
        return await self._batch.evalsha(self._reserve, keys, args)

    async def settle(
        self,
        reservation: Reservation | None,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        event: SpendEvent,
    ) -> SettleResult:
        """Charge `event.cost_nano` (and its tokens) and append the event, once per event id.

        With a reservation: to the budgets and periods it reserved in (`budgets` is ignored).
        Without one (no reserve was possible): to `budgets` in the periods of `event.ts_ms`.
        """
        if reservation is not None:
            if reservation.request_id != request_id or reservation.team != team:
                # It would charge the spend but leave the reservation held until its deadline.
                raise ValueError(
                    f"reservation of {reservation.request_id!r} settled as {request_id!r}"
                )
            try:
                result = await self.settle_periods(
                    team, request_id, reservation.budgets, reservation.period_ids, event
                )
            except BaseException:
                self._lease_done(reservation, event, landed=False)
                raise
            self._lease_done(reservation, event, landed=True)
            return result
        period_ids = tuple(period_at(b.period, event.ts_ms)[0] for b in budgets)
        return await self.settle_periods(team, request_id, tuple(budgets), period_ids, event)

    async def settle_periods(
        self,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        period_ids: Sequence[str],
        event: SpendEvent,
    ) -> SettleResult:
        """`settle` with the periods given explicitly (what a spool replay uses)."""
        call = self._settle_call(team, request_id, budgets, period_ids, event)
        await self._register(team)
        return call.result(await self._settle(keys=call.keys, args=call.args))

    async def settle_many(
        self,
        items: Sequence[tuple[Reservation | None, str, str, Sequence[BudgetConfig], SpendEvent]],
    ) -> list[SettleResult | Exception]:
        """Several `settle`s in one round trip (pipelined with the loop turn's other commands,
        store/batch.py; each script is still atomic). A failure, of the script or of the
        connection, comes back in the slot of each settle it hit."""
        calls = []
        for reservation, team, request_id, budgets, event in items:
            if reservation is not None:
                budgets, period_ids = reservation.budgets, reservation.period_ids
            else:
                period_ids = tuple(period_at(b.period, event.ts_ms)[0] for b in budgets)
            calls.append(self._settle_call(team, request_id, budgets, period_ids, event))
        for team in {item[1] for item in items}:
            await self._register(team)
        raws = await asyncio.gather(
            *(self._batch.evalsha(self._settle, c.keys, c.args) for c in calls),
            return_exceptions=True,
        )
        for raw in raws:
            if isinstance(raw, BaseException) and not isinstance(raw, Exception):
                raise raw  # cancelled (shutdown): not a settle's outcome
        results: list[SettleResult | Exception] = []
        for call, raw, item in zip(calls, raws, items, strict=True):
            results.append(raw if isinstance(raw, Exception) else call.result(raw))
            if item[0] is not None:
                self._lease_done(item[0], item[4], landed=not isinstance(raw, Exception))
        return results

    async def _register(self, team: str) -> None:
        """Put the team's stream in the registry the aggregator reads, once per team: the
        settles of a burst (a cold replica's first requests) wait for one SADD rather than
        each sending its own, each wanting a pooled connection at the same moment."""
        if team not in self._registered:
            await self._registering.run(team, lambda: self._add_stream(team))

    async def _add_stream(self, team: str) -> None:
        # Outside the script: the registry is not in the team's slot. SADD is idempotent.
        await self._redis.sadd(rediskeys.streams_registry(), team)
        self._registered.add(team)

    def _settle_call(
        self,
        team: str,
        request_id: str,
        budgets: Sequence[BudgetConfig],
        period_ids: Sequence[str],
        event: SpendEvent,
    ) -> _SettleCall:
        if event.team != team:
            raise ValueError(f"event of team {event.team!r} settled for team {team!r}")
        _check_amount(event.cost_nano, "cost_nano")
        tokens = event.prompt_tokens + event.completion_tokens
        _check_amount(tokens, "tokens")
        budgets, period_ids = tuple(budgets), tuple(period_ids)
        at = (team, budgets, period_ids, hour_id(event.ts_ms))
        layout = self._layouts.get(at)
        if layout is None:
            if len(self._layouts) >= _LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[at] = _SettleLayout.of(*at)
        now_ms = int(self._clock() * 1000)
        keys = [*layout.counters, rediskeys.reservation(team, request_id), *layout.shared]
        args: list[str | int | bytes] = [request_id, event.event_id, event.cost_nano, tokens]
        args.append(rediskeys.SETTLED_TTL_S)
        for limit_nano, limit_tokens, thresholds, expire_at_ms in layout.budget_args:
            args += (limit_nano, limit_tokens, thresholds, _ttl_until(expire_at_ms, now_ms))
        args.append(orjson.dumps(event.to_flat()))
        return _SettleCall(keys, args, budgets, period_ids, layout.ends)

    async def release_expired(self, team: str) -> int:
        """Release the team's reservations past their deadline (at most 100 per call)."""
        keys = [rediskeys.reservation(team, ""), rediskeys.reservation_deadlines(team)]
        raw = await self._reserve(keys=keys, args=["", int(self._clock() * 1000), 0, 0, 0, 0])
        return int(raw[2])

    def forget_streams(self) -> None:
        """Register team streams again on next settle (after Redis may have lost its data)."""
        self._registered.clear()

    async def budget_status(self, team: str, budgets: Sequence[BudgetConfig]) -> list[BudgetStatus]:
        """Each budget's current period: spent, reserved (for reports and the admin API)."""
        _check_team(team, budgets)
        now = self.now()
        period_ids = tuple(period_id(b.period, now) for b in budgets)
        async with self._redis.pipeline(transaction=False) as pipe:
            for budget, pid in zip(budgets, period_ids, strict=True):
                pipe.hmget(
                    rediskeys.budget_counter(team, budget.name, pid),
                    ["spent_nano", "reserved_nano", "spent_tokens", "reserved_tokens"],
                )
            rows = await pipe.execute()
        return [
            BudgetStatus(b, pid, period_end(b.period, now), *(int(v or 0) for v in row))
            for b, pid, row in zip(budgets, period_ids, rows, strict=True)
        ]

    async def count_refusal(self, team: str, budget: str, action: str, count: int = 1) -> None:
        """`count` requests that `budget` refused (`action` "block") or sent to a cheaper model
        ("downgrade"), counted in the month of the ledger's clock (read by `refusals`)."""
        key = rediskeys.budget_refusals(team, self.now().strftime("%Y%m"))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, f"{budget}|{action}", count)
            pipe.expire(key, rediskeys.ROLLUP_DAILY_TTL_S)
            await pipe.execute()

    async def refusals(self, team: str, month: str) -> dict[tuple[str, str], int]:
        """(budget, action) -> requests refused or downgraded in the month ("YYYY-MM")."""
        raw = await self._redis.hgetall(rediskeys.budget_refusals(team, month.replace("-", "")))
        out: dict[tuple[str, str], int] = {}
        for field, count in raw.items():
            text = field.decode() if isinstance(field, bytes) else field
            name, _, action = text.rpartition("|")
            out[(name, action)] = int(count)
        return out


def _statuses(
    budgets: tuple[BudgetConfig, ...],
    period_ids: tuple[str, ...],
    ends: tuple[datetime | None, ...],
    flat: Sequence[Any],
) -> tuple[BudgetStatus, ...]:
    values = [int(v) for v in flat]
    return tuple(
        BudgetStatus(b, pid, end, *values[4 * i : 4 * i + 4])
        for i, (b, pid, end) in enumerate(zip(budgets, period_ids, ends, strict=True))
    )


def _leased(lease: Lease, request_id: str, amount_nano: int, amount_tokens: int) -> Reservation:
    """The reservation of a request taken in `lease`: as `reserve` returns, with the budgets as
    this process sees them through its lease."""
    counts = zip(lease.budgets, lease.period_ids, lease.ends, lease.counts(), strict=True)
    return Reservation(
        True,
        lease.team,
        request_id,
        lease.budgets,
        lease.period_ids,
        tuple(BudgetStatus(b, pid, end, *c) for b, pid, end, c in counts),
        amount_nano,
        amount_tokens,
        lease.deadline_ms,
        lease=lease,
    )


def _budget_args(
    budgets: Sequence[BudgetConfig],
    ends: Sequence[datetime | None],
    now_ms: int,
    enforce_downgrade: bool,
) -> list[str | int]:
    """reserve.lua's four arguments per budget."""
    args: list[str | int] = []
    for budget, end in zip(budgets, ends, strict=True):
        mode = budget.on_exceed
        if mode == "downgrade" and not enforce_downgrade:
            mode = "alert"
        args += [_limit(budget.limit_nano), _limit(budget.limit_tokens), mode]
        args.append(_ttl_ms(end, now_ms))
    return args


@functools.lru_cache(maxsize=64)
def _thresholds_text(thresholds: tuple[int, ...]) -> str:
    return ",".join(str(t) for t in thresholds)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _ttl_ms(end: datetime | None, now_ms: int) -> int:
    """A counter's TTL: its period's end plus retention, relative to our clock (so a replica's
    clock skew or an injected test clock never expires it early); -1: never (total)."""
    return _ttl_until(_expire_at_ms(end), now_ms)


def _ttl_until(expire_at_ms: int | None, now_ms: int) -> int:
    return -1 if expire_at_ms is None else max(1000, expire_at_ms - now_ms)


def _expire_at_ms(end: datetime | None) -> int | None:
    """When a counter of a period ending at `end` may go (epoch ms); None: never (total)."""
    if end is None:
        return None
    return (int(end.timestamp()) + rediskeys.BUDGET_COUNTER_RETENTION_S) * 1000


def _check_amount(value: int, name: str) -> None:
    if not 0 <= value < MAX_EXACT:
        raise ValueError(f"{name} must be an integer in [0, 2^53), not {value!r}")


def _check_team(team: str, budgets: Sequence[BudgetConfig]) -> None:
    for budget in budgets:
        if budget.team != team:
            # Another team's counter is in another cluster slot: one script cannot touch both.
            raise ValueError(
                f"budget {budget.name!r} belongs to team {budget.team!r}, not {team!r}"
            )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
