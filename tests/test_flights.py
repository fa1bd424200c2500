"""One call per key at a time (gateway.flights): shared while in flight, shielded from each
caller, new once done."""

from __future__ import annotations

import asyncio

import pytest

from gateway.flights import Flights


async def test_callers_of_a_key_in_flight_share_its_one_call() -> None:
    flights: Flights[str, int] = Flights()
    release = asyncio.Event()
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    waiting = [asyncio.create_task(flights.run("k", call)) for _ in range(5)]
    other = asyncio.create_task(flights.run("other", call))
    await asyncio.sleep(0)
    assert len(flights) == 2
    release.set()
    assert await asyncio.gather(*waiting) in ([1] * 5, [2] * 5)
    assert await other in (1, 2) and calls == 2
    assert len(flights) == 0
    assert await flights.run("k", call) == 3  # done: the next caller starts a new call


async def test_a_caller_that_goes_away_leaves_the_call_to_the_others() -> None:
    flights: Flights[str, str] = Flights()
    release = asyncio.Event()

    async def call() -> str:
        await release.wait()
        return "answer"

    first = asyncio.create_task(flights.run("k", call))
    second = asyncio.create_task(flights.run("k", call))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "answer"
    assert first.cancelled()


async def test_every_caller_gets_the_calls_exception() -> None:
    flights: Flights[str, None] = Flights()

    async def call() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("store down")

    results = await asyncio.gather(
        *(flights.run("k", call) for _ in range(3)), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError] * 3
    assert len(flights) == 0
    with pytest.raises(ConnectionError):  # not remembered: the next caller tries again
        await flights.run("k", call)
