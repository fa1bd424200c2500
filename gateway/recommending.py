"""Recommendations from the store: reads the rollups, the signal rollups and the virtual keys,
and hands them to the pure `analytics.recommendations`. What the recommendations report lists,
and what the scorecard's savings still available and the weekly review's top recommendations
read (as `Opportunity`s), so that the three agree."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from gateway.analytics.recommendations import (
    DIMENSIONS,
    LOOKBACK_DAYS,
    KeySeen,
    Recommendation,
    recommendations,
)
from gateway.analytics.rollupdata import RollupData
from gateway.analytics.scorecard import Opportunity
from gateway.rollupformat import DAILY, HOURLY, SIGNAL_DIMENSIONS
from gateway.store.keys import Keyring
from gateway.store.rollups import known_teams, read_rollups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.config.model import BudgetConfig, Config
    from gateway.store.keys import KeyInfo


async def load_recommendations(
    config: Config,
    redis: Redis,
    start: date,
    end: date,
    budgets: Sequence[BudgetConfig],
    keys: Sequence[KeyInfo] = (),
    *,
    whole_month: bool = False,
) -> list[Recommendation]:
    """Every recommendation for the days start..end, dearest saving first. `budgets`: every
    budget in force (config and admin); `keys`: the virtual keys (revoked ones and those
    declared in the config are skipped; without keys, no idle key is found); `whole_month`:
    the days are one calendar month (savings are not scaled to 30 days)."""
    teams = await known_teams(redis, config.teams)
    first = start - timedelta(days=LOOKBACK_DAYS)
    history = await read_rollups(redis, teams, first, end, DAILY, DIMENSIONS)
    # The signal rollups (the fingerprints above all) only for the days themselves.
    signals = await read_rollups(redis, teams, start, end, DAILY, SIGNAL_DIMENSIONS)
    data = RollupData.from_hashes(DAILY, first, end, {**history, **signals})
    # Hourly rollups are kept 35 days: an older period is judged on what is left of it.
    hourly = await read_rollups(redis, teams, start, end, HOURLY, ("key",))
    seen = [
        KeySeen(k.key_id, k.team, k.name, _day(k.created_at))
        for k in keys
        if not k.revoked and k.source == "store" and k.team is not None
    ]
    # A large ledger takes seconds to read through: not on the event loop.
    return await asyncio.to_thread(
        partial(
            recommendations,
            data,
            config,
            start,
            end,
            budgets=budgets,
            keys=seen,
            whole_month=whole_month,
            hourly=RollupData.from_hashes(HOURLY, start, end, hourly),
        )
    )


async def load_opportunities(
    config: Config,
    redis: Redis,
    start: date,
    end: date,
    budgets: Sequence[BudgetConfig],
    *,
    whole_month: bool = False,
) -> list[Opportunity]:
    """The recommendations of the days start..end that name a team, as the scorecard and the
    review read them (the store's keys read here)."""
    keys = await Keyring(redis, config.keys).list()
    found = await load_recommendations(
        config, redis, start, end, budgets, keys, whole_month=whole_month
    )
    return opportunities(found)


def opportunities(found: Iterable[Recommendation]) -> list[Opportunity]:
    return [
        Opportunity(r.team, f"{r.kind.replace('_', ' ')} ({r.subject})", r.monthly_saving_nano)
        for r in found
        if r.team != "*"
    ]


def _day(epoch_s: float | None) -> date | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).date()
