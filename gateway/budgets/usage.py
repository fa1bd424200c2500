"""Where every budget in force stands: spent, reserved and remaining in its current period, read
from the counters the reserve and settle scripts keep. What `GET /admin/budgets` answers and
`spendgate budgets usage` prints, as exact JSON-ready data (USD as decimal strings and nano-USD).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.budgets.messages import format_usd

if TYPE_CHECKING:
    from gateway.budgets.ledger import BudgetLedger, BudgetStatus
    from gateway.budgets.registry import BudgetRegistry
    from gateway.config.model import BudgetConfig


async def budget_usage(
    registry: BudgetRegistry, ledger: BudgetLedger, team: str | None = None
) -> list[BudgetStatus]:
    """Every budget in force (config first, then admin), optionally of one team, in the period
    of the ledger's clock. Raises RedisError / OSError when the store is unreachable."""
    await registry.refresh()  # what other replicas' admins created
    budgets = registry.all(team)
    by_team: dict[str, list[BudgetConfig]] = {}
    for budget in budgets:
        by_team.setdefault(budget.team, []).append(budget)
    statuses = {}
    for name, rules in by_team.items():
        await ledger.release_expired(name)  # so "reserved" excludes crashed replicas' holds
        statuses.update({s.budget.name: s for s in await ledger.budget_status(name, rules)})
    return [statuses[b.name] for b in budgets]


def status_dict(status: BudgetStatus) -> dict[str, Any]:
    """A budget's definition and its current period's figures."""
    b = status.budget
    remaining_nano, remaining_tokens = status.remaining_nano, status.remaining_tokens
    end = status.period_end
    return {
        "name": b.name,
        "team": b.team,
        "scope": b.scope,
        "match": b.match,
        "period": b.period,
        "on_exceed": b.on_exceed,
        "downgrade_to": b.downgrade_to,
        "thresholds": list(b.thresholds),
        "source": b.source,
        "limit_usd": _usd(b.limit_nano),
        "limit_nano": b.limit_nano,
        "limit_tokens": b.limit_tokens,
        "period_id": status.period_id,
        "period_end": None if end is None else f"{end:%Y-%m-%dT%H:%M:%SZ}",
        "spent_usd": format_usd(status.spent_nano),
        "spent_nano": status.spent_nano,
        "reserved_usd": format_usd(status.reserved_nano),
        "reserved_nano": status.reserved_nano,
        "remaining_usd": _usd(remaining_nano),
        "remaining_nano": remaining_nano,
        "spent_tokens": status.spent_tokens,
        "reserved_tokens": status.reserved_tokens,
        "remaining_tokens": remaining_tokens,
        "pct": round(status.pct, 2),
    }


def _usd(nano: int | None) -> str | None:
    return None if nano is None else format_usd(nano)
