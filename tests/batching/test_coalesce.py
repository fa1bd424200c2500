"""In-flight coalescing: one upstream call per group of identical concurrent requests, results
and errors shared, cancellation never strands anyone, and billing parts that add up."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.batching.coalesce import Coalescer, Shared, coalesced_cost_nano
from gateway.errors import ServiceUnavailable, UpstreamError
from gateway.providers.mock import MockOptions, MockUpstream


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_identical_calls_share_one_call() -> None:
    coalescer: Coalescer[dict[str, int]] = Coalescer()
    calls = 0
    release = asyncio.Event()

    async def factory() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"answer": 42}

    tasks = [asyncio.create_task(coalescer.run("k", factory)) for _ in range(50)]
    await settle()
    assert len(coalescer) == 1
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r.result == {"answer": 42} and r.group_size == 50 for r in results)
    assert [r.is_leader for r in results].count(True) == 1
    assert results[0].is_leader  # the first caller leads
    assert len(coalescer) == 0  # the entry goes when the call lands

    again = await coalescer.run("k", factory)  # a later request is a new call
    assert calls == 2 and again == Shared({"answer": 42}, True, 1)


async def test_different_keys_do_not_share() -> None:
    coalescer: Coalescer[str] = Coalescer()
    release = asyncio.Event()

    async def factory(value: str) -> str:
        await release.wait()
        return value

    a = asyncio.create_task(coalescer.run("a", lambda: factory("a")))
    b = asyncio.create_task(coalescer.run("b", lambda: factory("b")))
    await settle()
    assert len(coalescer) == 2
    release.set()
    assert (await a).result == "a" and (await b).result == "b"


async def test_errors_reach_every_caller() -> None:
    coalescer: Coalescer[str] = Coalescer()
    release = asyncio.Event()

    async def factory() -> str:
        await release.wait()
        raise UpstreamError("upstream said no", upstream_status=500)

    tasks = [asyncio.create_task(coalescer.run("k", factory)) for _ in range(5)]
    await settle()
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, UpstreamError) for o in outcomes)
    assert len(coalescer) == 0


async def test_a_caller_cancelled_just_as_the_error_lands_leaves_nothing_unretrieved() -> None:
    # The error is handed to every waiter, then the first caller's cancellation (its client
    # left) arrives before it resumes: it ends cancelled, the other still gets the error, and
    # asyncio finds no exception that nobody retrieved.
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    coalescer: Coalescer[str] = Coalescer()
    release = asyncio.Event()

    callers: list[asyncio.Task[Shared[str]]] = []

    async def factory() -> str:
        await release.wait()
        loop.call_soon(callers[0].cancel)  # before the callers' wake-ups this error schedules
        raise UpstreamError("upstream said no", upstream_status=500)

    callers += [asyncio.create_task(coalescer.run("k", factory)) for _ in range(2)]
    await settle()
    release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[1], UpstreamError)
    del outcomes  # with the callers, the error's traceback holds the flight and its waiters
    callers.clear()
    gc.collect()
    loop.set_exception_handler(None)
    assert reported == []


async def test_a_cancelled_leader_does_not_strand_followers() -> None:
    coalescer: Coalescer[str] = Coalescer()
    release = asyncio.Event()
    calls = 0

    async def factory() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    leader = asyncio.create_task(coalescer.run("k", factory))
    await settle()
    followers = [asyncio.create_task(coalescer.run("k", factory)) for _ in range(3)]
    await settle()
    leader.cancel()  # its client went away
    await settle()
    with pytest.raises(asyncio.CancelledError):
        await leader
    release.set()
    results = await asyncio.gather(*followers)
    assert calls == 1
    assert all(r.result == "ok" and r.group_size == 3 for r in results)
    # The earliest caller still waiting takes over the leader's part of the bill.
    assert [r.is_leader for r in results] == [True, False, False]


async def test_the_call_is_cancelled_when_nobody_waits() -> None:
    coalescer: Coalescer[str] = Coalescer()
    cancelled = asyncio.Event()

    async def factory() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    tasks = [asyncio.create_task(coalescer.run("k", factory)) for _ in range(3)]
    await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), 1)
    await settle()
    assert len(coalescer) == 0


async def test_shutdown_gives_waiters_a_retryable_error() -> None:
    coalescer: Coalescer[str] = Coalescer()

    async def factory() -> str:
        await asyncio.sleep(30)
        return "never"

    tasks = [asyncio.create_task(coalescer.run("k", factory)) for _ in range(3)]
    await settle()
    await coalescer.aclose()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailable) and o.retryable for o in outcomes)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("cost", [0, 1, 999, 1_000_003])
def test_billing_parts_sum_to_the_cost(size: int, cost: int) -> None:
    split = [coalesced_cost_nano(cost, i == 0, size, "split") for i in range(size)]
    assert sum(split) == cost and max(split) - min(split) <= size
    first = [coalesced_cost_nano(cost, i == 0, size, "first") for i in range(size)]
    assert first[0] == cost and sum(first) == cost


async def test_fifty_identical_requests_make_one_upstream_call() -> None:
    """Through a real socket: the mock records what reached it."""
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "same question"}],
        "temperature": 0,
    }
    async with (
        MockUpstream(MockOptions(latency_s=0.2)) as mock,
        aiohttp.ClientSession() as session,
    ):
        coalescer: Coalescer[bytes] = Coalescer()

        async def call() -> bytes:
            async with session.post(mock.base_url + "/chat/completions", json=body) as response:
                response.raise_for_status()
                return await response.read()

        results = await asyncio.gather(*(coalescer.run("same", call) for _ in range(50)))
        assert len(mock.requests) == 1
        assert len({r.result for r in results}) == 1
        assert orjson.loads(results[0].result)["object"] == "chat.completion"
        assert sum(r.is_leader for r in results) == 1 and results[0].group_size == 50
