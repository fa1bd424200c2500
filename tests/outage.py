"""A load run through a store outage, and the exactly-once checks after it: shared by the tests
that kill Redis mid-load (test_ledger_recovery) and fail a cluster primary over mid-load
(test_cluster_failover).

`serve_through_outage` sends 160 chat requests as team alpha (four clients, forty each, a third
of them streamed) and runs the test's own steps (kill the store, bring it back) after given
numbers of answers; `assert_counted_once` then checks that every settle reached the store (the
spool replayed), that the aggregator rolled up exactly what the mock upstream's usage implies,
and that the stream holds each of the 160 events once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.app.state import PIPELINE, SPOOL
from gateway.providers.mock import MockUpstream
from gateway.providers.mock.tokens import prompt_tokens_for
from gateway.types import SpendEvent
from tests.conftest import Gateway

# gpt-4o list prices in nano-USD per 1M tokens: $2.50 input, $10 output.
INPUT_PER_M, OUTPUT_PER_M = 2_500_000_000, 10_000_000_000
REQUESTS = 160
MAX_TOKENS = 8


def expected_cost_nano(mock: MockUpstream, max_tokens: int) -> int:
    """What the mock's usage implies: its prompt count and min(max_tokens, 16) output words."""
    total = 0
    for request in mock.requests:
        assert request.body is not None
        prompt = prompt_tokens_for(request.body)
        completion = min(max_tokens, 16)
        total += (prompt * INPUT_PER_M + completion * OUTPUT_PER_M) // 1_000_000
    return total


async def rolled_up_cost(redis: Redis, team: str, clock: Callable[[], float]) -> int:
    day = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%d")
    value = await redis.hget(rediskeys.rollup(team, "d", day, "team"), f"{team}|cost")
    return int(value or 0)


async def serve_through_outage(
    gw: Gateway, steps: Mapping[int, Callable[[], Awaitable[None]]]
) -> list[int]:
    """The statuses of the run's requests; `steps[n]()` runs right after the n-th answer, while
    the other clients' requests and settles are in flight."""
    key = gw.keys["alpha"]
    statuses: list[int] = []

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        for i in range(REQUESTS // 4):
            body = {
                "model": "gpt-4o",
                "max_tokens": MAX_TOKENS,
                "stream": (n + i) % 3 == 0,
                "messages": [{"role": "user", "content": f"request {n} {i} of the run"}],
            }
            async with http.post(
                gw.base_url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                await response.read()
                statuses.append(response.status)
            if (step := steps.get(len(statuses))) is not None:
                await step()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(http, n) for n in range(4)))
    return statuses


async def assert_counted_once(
    gw: Gateway,
    mock: MockUpstream,
    redis: Redis,
    stop: asyncio.Event,
    aggregator: asyncio.Task[None],
) -> None:
    """After the run: the spool went to the store and was replayed, the aggregator (`aggregator`,
    stopped here through `stop`) rolled up exactly the mock's usage, each event is there once."""
    await gw.app[PIPELINE].accountant.drain()
    spool = gw.app[SPOOL]
    assert spool.appended > 0, "the outage must have sent settles to the spool"
    async with asyncio.timeout(30):
        while spool.pending():  # replayed by the spool's own maintenance task
            await asyncio.sleep(0.05)
    expected = expected_cost_nano(mock, max_tokens=MAX_TOKENS)
    stream = rediskeys.events_stream("alpha")
    try:
        async with asyncio.timeout(30):
            while await rolled_up_cost(redis, "alpha", gw.clock) != expected:
                await asyncio.sleep(0.05)  # the aggregator catches up on its own schedule
    except TimeoutError:
        pending = await redis.xpending(stream, rediskeys.EVENTS_GROUP)
        pytest.fail(
            f"rolled up {await rolled_up_cost(redis, 'alpha', gw.clock)} nano-USD, expected "
            f"{expected}; {await redis.xlen(stream)} events in the stream, "
            f"{pending['pending']} pending"
        )
    stop.set()
    await aggregator
    events = [SpendEvent.from_fields(fields) for _, fields in await redis.xrange(stream)]
    assert len(events) == REQUESTS == len({e.event_id for e in events})
    assert sum(e.cost_nano for e in events) == expected
    assert await rolled_up_cost(redis, "alpha", gw.clock) == expected
