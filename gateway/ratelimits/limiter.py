"""Rate limits shared across replicas, at a fraction of a store round trip per request.

Each limit counts in fixed one-minute windows (UTC, from the start of the minute). The shared
count of a (rule, subject, kind, window) is one integer in the store; a process does not ask it
per request but takes a *slice* of it at once (`take.lua`: up to `local_share` of what is
left, at least one unit) and admits requests against the slice in memory. When a slice runs
low the next one is taken in the background, so under steady traffic no request waits on the
store; near the limit slices shrink to single units, and once the store says the window is
used up the process refuses locally until the window ends, without asking again.

- Requests: one unit each, taken before the request is admitted, so a window never admits more
  than the limit across all replicas. Units taken and not used by the window's end are lost:
  the limit can under-admit by up to one slice per process.
- Tokens: admitted while the slice has any room; what the request consumed (usage, after the
  response) is taken from it then, and what exceeds the slice is added to the shared count with
  the next take. So a window's tokens can exceed the limit by what the requests in flight when
  it was reached consume.

If the store cannot be reached, each process goes on alone: it counts its own traffic against
the whole limit (N replicas may then admit up to N times the limit) and logs it once a window.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.store.connect import batcher_for

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger("spendgate.ratelimits")

WINDOW_S = 60
STORE_TIMEOUT_S = 2.0  # as the request path's other store calls: then go on alone
Kind = Literal["requests", "tokens"]


@dataclass(slots=True)
class Slice:
    """This process's part of one shared count, in one window."""

    key: str  # the shared count's key in the store
    limit: int
    window: int
    limit_text: str = ""  # str(limit), for the x-ratelimit-limit-* headers
    claimed: int = 0  # what this process added to the shared count (slices taken, token debt)
    used: int = 0  # requests admitted / tokens consumed here
    shared: int = 0  # the shared count, as of the store's last answer
    exhausted: bool = False  # the store had nothing left: refuse until the window ends
    want: int = 1  # the size of the next slice to take (`RateLimiter._want`)
    taking: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def room(self) -> int:
        return self.claimed - self.used

    @property
    def remaining(self) -> int:
        """What is left of the limit this window, as far as this process knows."""
        return max(0, self.limit - self.shared + self.claimed - self.used)

    def has_room(self) -> bool:
        """Room for one more request: a unit of its own (requests), or any at all (tokens:
        what the request consumes is taken after it); units are whole, so both are >= 1."""
        return self.claimed - self.used >= 1


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a request is subject to: a rule's requests or tokens for one subject."""

    rule: str
    per: str  # key | team | model
    subject: str  # the key id, team or model name counted
    kind: Kind
    limit: int


@dataclass(slots=True)
class Bundle:
    """The limits one principal and model are subject to and, for one window, their slices: a
    request is admitted against them without looking anything up (`RateLimiter.admit_now`)."""

    limits: tuple[Limit, ...]
    window: int = -1
    slices: list[Slice] = field(default_factory=list)  # one per limit, in the same order
    requests: list[Slice] = field(default_factory=list)  # those of the request limits
    tokens: list[Slice] = field(default_factory=list)  # those of the token limits


class RateLimiter:
    def __init__(
        self,
        store: Redis | None,
        clock: Callable[[], float],
        local_share: float = 0.05,
    ) -> None:
        self._store = store
        self._clock = clock
        self.local_share = local_share
        self._slices: dict[tuple[str, str, Kind], Slice] = {}
        self._window = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_window = -1
        self._script: AsyncScript | None = None
        if store is not None:
            source = resources.files("gateway.ratelimits").joinpath("lua", "take.lua")
            self._script = store.register_script(source.read_text(encoding="utf-8"))
            self._batch = batcher_for(store)

    @staticmethod
    def reset_in(now: float) -> float:
        """Seconds from `now` (the clock's) until the window ends and every limit starts
        again."""
        return (now // WINDOW_S + 1) * WINDOW_S - now

    def slice(self, limit: Limit) -> Slice:
        self._roll()
        window = self._window
        ident = (limit.rule, limit.subject, limit.kind)
        found = self._slices.get(ident)
        if found is None or found.window != window:
            key = rediskeys.rate_count(limit.rule, limit.subject, limit.kind, window)
            found = self._slices[ident] = Slice(key, limit.limit, window, str(limit.limit))
            found.want = self._want(found)
        if found.limit != limit.limit:  # a reload changed it: the store may have room again
            found.limit, found.exhausted = limit.limit, False
            found.limit_text, found.want = str(limit.limit), self._want(found)
        return found

    def admit_now(self, bundle: Bundle, now: float) -> bool:
        """Take one request against every limit of `bundle` from this process's slices when
        they all have room (the common case: no store, no waiting); False, having taken
        nothing, when one needs the store first (`admit`). `now`: the clock's time."""
        window = int(now // WINDOW_S)
        if bundle.window != window:
            self._fill(bundle, window)
        for s in bundle.slices:
            if s.claimed - s.used < 1:
                return False
        for s in bundle.requests:
            s.used += 1
        for s in bundle.slices:
            if (s.claimed - s.used) * 2 < s.want:
                self._top_up(s)
        return True

    async def admit(self, limits: Sequence[Limit] | Bundle) -> tuple[list[Slice], Limit | None]:
        """Take one request against every limit; (its slices, None) when admitted, else (the
        slices, the first limit it is over), having taken nothing."""
        bundle = limits if isinstance(limits, Bundle) else Bundle(tuple(limits))
        while True:
            if self.admit_now(bundle, self._clock()):
                return bundle.slices, None
            pairs = zip(bundle.limits, bundle.slices, strict=True)
            short = [(limit, s) for limit, s in pairs if not s.has_room()]
            for limit, s in short:
                if s.exhausted:
                    return bundle.slices, limit
            await asyncio.gather(*(self._take(s) for _, s in short))
            for limit, s in short:
                if s.exhausted and not s.has_room():
                    return bundle.slices, limit

    def consume(self, bundle: Bundle, tokens: int) -> None:
        """A request's tokens, once known, against its token limits in this window."""
        if tokens <= 0 or not bundle.tokens:
            return
        window = int(self._clock() // WINDOW_S)
        if bundle.window != window:
            self._fill(bundle, window)
        for s in bundle.tokens:
            s.used += tokens
            if (s.claimed - s.used) * 2 < s.want:
                self._top_up(s)

    def _fill(self, bundle: Bundle, window: int) -> None:
        """`bundle`'s slices for `window` (the current one)."""
        bundle.slices = [self.slice(limit) for limit in bundle.limits]
        pairs = list(zip(bundle.limits, bundle.slices, strict=True))
        bundle.requests = [s for limit, s in pairs if limit.kind == "requests"]
        bundle.tokens = [s for limit, s in pairs if limit.kind == "tokens"]
        bundle.window = window

    async def aclose(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _current_window(self) -> int:
        return int(self._clock() // WINDOW_S)

    def _roll(self) -> None:
        """At a new minute, drop the old windows' slices."""
        window = self._current_window()
        if window != self._window:
            self._window = window
            self._slices = {k: s for k, s in self._slices.items() if s.window == window}

    def _want(self, s: Slice) -> int:
        return max(1, math.ceil(self.local_share * max(0, s.limit - s.shared)))

    def _top_up(self, s: Slice) -> None:
        """Take the next slice in the background when this one runs low (or is overdrawn)."""
        if s.exhausted or s.taking is not None or s.room * 2 >= s.want:
            return
        task = asyncio.get_running_loop().create_task(self._take(s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(self, s: Slice) -> None:
        """One take from the shared count at a time per slice; the others wait for it."""
        if s.taking is None:
            s.taking = asyncio.get_running_loop().create_task(self._take_once(s))
            s.taking.add_done_callback(lambda _: setattr(s, "taking", None))
        await asyncio.shield(s.taking)

    async def _take_once(self, s: Slice) -> None:
        want, debt = self._want(s), max(0, s.used - s.claimed)
        ttl_ms = int((s.window + 1) * WINDOW_S * 1000 - self._clock() * 1000) + WINDOW_S * 1000
        try:
            granted, count = await asyncio.wait_for(
                self._call(s.key, s.limit, want, debt, max(1000, ttl_ms)), STORE_TIMEOUT_S
            )
        except (RedisError, OSError, TimeoutError) as exc:
            # Alone: count this process's own traffic against the whole limit.
            if self._warned_window != s.window:
                self._warned_window = s.window
                log.warning("rate limits: the store is unreachable (%s); limiting alone", exc)
            count = s.shared + debt
            granted = max(0, min(want, s.limit - count))
            count += granted
        s.claimed += debt + granted
        s.shared = max(s.shared, count)
        s.want = self._want(s)
        if granted == 0:
            s.exhausted = True

    async def _call(self, key: str, limit: int, want: int, debt: int, ttl_ms: int) -> Any:
        if self._script is None:
            raise RedisError("no store")
        args = (limit, want, debt, ttl_ms)
        raw = await self._batch.evalsha(self._script, [key], args)
        return int(raw[0]), int(raw[1])
