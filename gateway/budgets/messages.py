"""What a budget tells the client: the 429 of a refused reservation, the remaining-budget
headers, and the wording and money format they (and alert messages, the admin API) share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config.model import BudgetConfig
from gateway.errors import RateLimited
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from gateway.budgets.ledger import Reservation

REMAINING_USD_HEADER = "x-sg-budget-remaining-usd"
REMAINING_TOKENS_HEADER = "x-sg-budget-remaining-tokens"

_PERIOD_TEXT = {
    "daily": "per day",
    "weekly": "per week",
    "monthly": "per month",
    "total": "in total",
}


def exceeded_error(reservation: Reservation) -> RateLimited:
    """The 429 for a refused reservation: which budget, its limit and period, when it resets."""
    status = reservation.exceeded_status
    if status is None:
        raise ValueError("the reservation was not refused")
    budget = status.budget
    limits = []
    if budget.limit_nano is not None:
        limits.append(f"${format_usd(budget.limit_nano)}")
    if budget.limit_tokens is not None:
        limits.append(f"{budget.limit_tokens:,} tokens")
    used = []
    if budget.limit_nano is not None:
        used.append(
            f"${format_usd(status.spent_nano)} spent + ${format_usd(status.reserved_nano)} held "
            "by requests in flight; this request needs up to "
            f"${format_usd(reservation.amount_nano)}"
        )
    if budget.limit_tokens is not None:
        used.append(
            f"{status.spent_tokens:,} tokens spent + {status.reserved_tokens:,} held; this "
            f"request needs up to {reservation.amount_tokens:,}"
        )
    message = (
        f"Budget '{budget.name}' ({describe_scope(budget)}) is exhausted: limit "
        f"{' and '.join(limits)} {_PERIOD_TEXT[budget.period]}; {'; '.join(used)}."
    )
    headers: dict[str, str] = {}
    if status.period_end is not None and reservation.retry_after_s is not None:
        message += (
            f" It resets at {status.period_end:%Y-%m-%dT%H:%M:%SZ} "
            f"(in {reservation.retry_after_s} s)."
        )
        headers["Retry-After"] = str(reservation.retry_after_s)
    else:
        message += " It is a total budget and does not reset: ask an admin to raise it."
    return RateLimited(message, code="budget_exceeded", headers=headers)


def remaining_headers(
    reservation: Reservation, spent: tuple[int, int] | None = None
) -> dict[str, str]:
    """`x-sg-budget-remaining-usd` / `-tokens`: what the tightest budget of the request has left
    once the request is paid for, as of this request: after its actual cost and tokens when
    they are known (`spent`), else after the worst case it holds (a stream's headers go out
    before its usage is known, so they show the least that can be left)."""
    nano, tokens = (
        (reservation.remaining_nano, reservation.remaining_tokens)
        if spent is None
        else reservation.remaining_after(*spent)
    )
    headers = {}
    if nano is not None:
        headers[REMAINING_USD_HEADER] = nano_to_usd_str(nano)  # same exact form as x-sg-cost-usd
    if tokens is not None:
        headers[REMAINING_TOKENS_HEADER] = str(tokens)
    return headers


def format_usd(nano: int) -> str:
    """Exact, without float rounding, trailing zeros trimmed to cents: 1.50, 0.000001234."""
    whole, _, frac = nano_to_usd_str(nano).partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(2, '0')}"


def format_usd_estimate(nano: float) -> str:
    """An estimate (a forecast) to the cent: more digits would claim a precision it lacks."""
    cents = round(nano / 10_000_000)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def describe_scope(budget: BudgetConfig) -> str:
    """ "team alpha", "project search of team alpha", "tag exp=a1 of team alpha"."""
    if budget.scope == "team":
        return f"team {budget.team}"
    return f"{budget.scope} {budget.match} of team {budget.team}"
