"""Budget leases: a block of budget reserved in Redis once, then spent locally request by request.

Far from its limit, a budget gains nothing from a Redis round trip per request: no single
request can take it over. So when the last reservation showed that every budget of a request has
at least `1 / fraction x MIN_REQUESTS` times the request's worst case left, the ledger reserves a
lease instead: an ordinary reservation (reserve.lua, under the id `lease.<process>.<n>`) of
`fraction` of what the tightest budget has left, on the same counters. Requests then reserve
against the lease in memory; each one is still settled on its own (actual cost, spend event),
exactly as before. Nearer the limit no lease is granted (the script refuses one smaller than
MIN_REQUESTS requests) and every request reserves in Redis again, so a budget is never
overspent and the last requests before a limit are counted one by one.

A lease is open for `window_s`, or until it cannot hold the next request; then it closes and,
once the settles of everything it reserved have landed, is given back. If one of those settles
was spooled (Redis unreachable) the lease is left to its deadline instead, so that the money
stays held until the spool replays it. A process that dies holding a lease holds it until the
deadline (window plus `budgets.reservation_ttl_s`), as with any reservation.

While a lease is held, Redis counts its whole amount as reserved and the spent part again as
spent: other replicas see up to one lease less than is left, never more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.config.model import BudgetConfig

# A lease smaller than this many requests of the one asking for it is not worth holding.
MIN_REQUESTS = 16


@dataclass(eq=False, slots=True)
class Lease:
    lease_id: str
    team: str
    budgets: tuple[BudgetConfig, ...]
    period_ids: tuple[str, ...]
    ends: tuple[datetime | None, ...]
    nano: int | None  # held in Redis; None: no budget of the set limits USD
    tokens: int | None  # None: no budget of the set limits tokens
    base: tuple[tuple[int, int, int, int], ...]  # per budget at grant, this lease included
    deadline_ms: int
    used_nano: int = 0  # in flight at their worst case, plus finished at their actual cost
    used_tokens: int = 0
    done_nano: int = 0  # finished, at their actual cost
    done_tokens: int = 0
    pending: int = 0  # reservations not settled yet
    closed: bool = False  # takes no more requests
    tainted: bool = False  # a settle was spooled: the hold stays until its deadline
    released: bool = False

    def take(self, nano: int, tokens: int) -> bool:
        """Hold one request's worst case, if the lease is open and has room for it."""
        if self.closed:
            return False
        if self.nano is not None and self.used_nano + nano > self.nano:
            return False
        if self.tokens is not None and self.used_tokens + tokens > self.tokens:
            return False
        self.used_nano += nano
        self.used_tokens += tokens
        self.pending += 1
        return True

    def finish(self, worst_nano: int, worst_tokens: int, cost_nano: int, tokens: int) -> None:
        """A request was settled: its worst case is replaced by what it cost."""
        self.used_nano += cost_nano - worst_nano
        self.used_tokens += tokens - worst_tokens
        self.done_nano += cost_nano
        self.done_tokens += tokens

    def settled(self, ok: bool) -> None:
        """The settle of one of its requests landed (ok) or was spooled."""
        self.pending -= 1
        if not ok:
            self.tainted = True

    @property
    def idle(self) -> bool:
        """Closed, every settle landed, not yet given back: release it now."""
        return self.closed and self.pending <= 0 and not self.tainted and not self.released

    def counts(self) -> list[tuple[int, int, int, int]]:
        """Each budget as this process sees it: spent and reserved at the grant, with what the
        lease spent since moved from reserved to spent and its unused part no longer held."""
        held_nano, held_tokens = self.nano or 0, self.tokens or 0
        in_flight_nano = self.used_nano - self.done_nano
        in_flight_tokens = self.used_tokens - self.done_tokens
        return [
            (
                spent + self.done_nano,
                reserved - held_nano + in_flight_nano,
                spent_tokens + self.done_tokens,
                reserved_tokens - held_tokens + in_flight_tokens,
            )
            for spent, reserved, spent_tokens, reserved_tokens in self.base
        ]
