"""Embeddings micro-batching: concurrent requests merged into few upstream calls against the
real mock, every client getting exactly its own vectors and its own share of the tokens."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.batching.embeddings import EmbeddingBatcher, apportion, group_key
from gateway.errors import UpstreamError
from gateway.metrics import Metrics
from gateway.pricing.tokens import count_prompt
from gateway.providers.mock import MockOptions, MockUpstream, embedding_for

MODEL = "text-embedding-3-small"


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (10, [1, 1, 1], [4, 3, 3]),
        (10, [5, 3, 2], [5, 3, 2]),
        (7, [0, 0], [4, 3]),
        (100, [1, 2, 3, 4], [10, 20, 30, 40]),
        (5, [3, 3, 3, 1], [2, 2, 1, 0]),  # ties go to the earlier weight
        (0, [3, 4], [0, 0]),
        (9, [], []),
    ],
)
def test_apportion(total: int, weights: list[int], parts: list[int]) -> None:
    assert apportion(total, weights) == parts


def test_apportion_always_sums_exactly() -> None:
    for total in range(0, 200, 7):
        for weights in ([1], [3, 7, 11], [1000, 1, 1], [2] * 13):
            parts = apportion(total, weights)
            assert sum(parts) == total and all(p >= 0 for p in parts)


def test_group_key_ignores_only_the_input() -> None:
    base = {"model": MODEL, "input": "a"}
    assert group_key(base) == group_key({**base, "input": ["b", "c"]})
    assert group_key(base) != group_key({**base, "dimensions": 4})
    assert group_key(base) != group_key({**base, "encoding_format": "base64"})
    assert group_key(base) != group_key({**base, "user": "u"})


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(MockOptions(latency_s=0.01)) as upstream:
        yield upstream


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def caller(mock: MockUpstream, session: aiohttp.ClientSession) -> Any:
    async def call(body: dict[str, Any]) -> tuple[dict[str, Any], None]:
        async with session.post(mock.base_url + "/embeddings", json=body) as response:
            payload = await response.json()
            if response.status != 200:
                raise UpstreamError(
                    payload["error"]["message"],
                    upstream_status=response.status,
                    retryable=response.status >= 500 or response.status == 429,
                )
            return payload, None

    return call


def vectors(response: dict[str, Any]) -> list[list[float]]:
    assert [d["index"] for d in response["data"]] == list(range(len(response["data"])))
    return [d["embedding"] for d in response["data"]]


async def test_sixty_four_single_input_requests_share_few_calls(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(
        0.02, 256, caller(mock, session), metrics=metrics
    )
    bodies = [{"model": MODEL, "input": f"document number {i} " + "word " * i} for i in range(64)]
    shares = await asyncio.gather(*(batcher.submit(group_key(b), b) for b in bodies))
    assert len(mock.requests) <= 4  # in practice one: all 64 arrive within the window
    assert batcher.calls == len(mock.requests)
    for body, share in zip(bodies, shares, strict=True):
        assert vectors(share.response) == [embedding_for(body["input"])]
        assert share.response["model"] == MODEL
        assert share.response["usage"] == {
            "prompt_tokens": share.usage_share,
            "total_tokens": share.usage_share,
        }
        assert not share.estimated
    # The shares add up to what the upstream reported, and follow each client's own size.
    upstream_total = sum(
        len(text.split())
        for r in mock.requests
        for text in r.body["input"]  # type: ignore[index]
    )
    assert sum(s.usage_share for s in shares) == upstream_total
    assert shares[63].usage_share > shares[0].usage_share
    batched = metrics.registry.get_sample_value("sg_embedding_batch_requests_sum", {"model": MODEL})
    assert batched == 64


async def test_max_inputs_flushes_without_waiting_for_the_window(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(30.0, 4, caller(mock, session))
    bodies = [{"model": MODEL, "input": [f"a{i}", f"b{i}"]} for i in range(6)]
    shares = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(group_key(b), b) for b in bodies)), 5
    )
    assert len(mock.requests) == 3  # 2 inputs each, 4 per call
    assert all(len(r.body["input"]) == 4 for r in mock.requests)  # type: ignore[index]
    for body, share in zip(bodies, shares, strict=True):
        assert vectors(share.response) == [embedding_for(x) for x in body["input"]]
        assert share.batch_requests == 2


async def test_shapes_dimensions_and_base64(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(0.02, 256, caller(mock, session))
    bodies: list[dict[str, Any]] = [
        {"model": MODEL, "input": "one string"},
        {"model": MODEL, "input": ["two", "strings"]},
        {"model": MODEL, "input": [1, 2, 3]},  # one token list
        {"model": MODEL, "input": [[4, 5], [6]]},  # token lists
        {"model": MODEL, "input": "short", "dimensions": 4},
        {"model": MODEL, "input": ["b64", "too"], "encoding_format": "base64"},
    ]
    shares = await asyncio.gather(*(batcher.submit(group_key(b), b) for b in bodies))
    # Text and token inputs never share a call; other parameters split groups too.
    for request in mock.requests:
        items = request.body["input"]  # type: ignore[index]
        kinds = {isinstance(i, str) for i in items}
        assert len(kinds) == 1
    assert len(mock.requests) == 4
    assert vectors(shares[0].response) == [embedding_for("one string")]
    assert vectors(shares[1].response) == [embedding_for("two"), embedding_for("strings")]
    assert vectors(shares[2].response) == [embedding_for([1, 2, 3])]
    assert vectors(shares[3].response) == [embedding_for([4, 5]), embedding_for([6])]
    assert shares[2].usage_share + shares[3].usage_share == 6
    assert vectors(shares[4].response) == [embedding_for("short", 4)]
    decoded = [list(struct.unpack("<8f", base64.b64decode(v))) for v in vectors(shares[5].response)]
    assert decoded == [embedding_for("b64"), embedding_for("too")]


async def test_an_upstream_failure_reaches_every_client_of_the_batch(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(0.02, 256, caller(mock, session))
    mock.inject(status=503, times=1)
    bodies = [{"model": MODEL, "input": f"x{i}"} for i in range(5)]
    outcomes = await asyncio.gather(
        *(batcher.submit(group_key(b), b) for b in bodies), return_exceptions=True
    )
    assert len(mock.requests) == 1
    assert all(isinstance(o, UpstreamError) and o.upstream_status == 503 for o in outcomes)


async def test_a_refused_input_fails_only_its_own_client() -> None:
    calls: list[list[str]] = []

    async def call(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        calls.append(body["input"])
        if any("bad" in x for x in body["input"]):
            raise UpstreamError("input rejected", upstream_status=400, retryable=False)
        data = [{"object": "embedding", "index": i, "embedding": [float(i)]} for i in range(3)]
        return {"object": "list", "data": data[: len(body["input"])], "model": "m"}, "meta"

    batcher: EmbeddingBatcher[str] = EmbeddingBatcher(0.02, 256, call)
    bodies = [{"model": "m", "input": [x]} for x in ("good", "bad", "fine")]
    outcomes = await asyncio.gather(
        *(batcher.submit(group_key(b), b) for b in bodies), return_exceptions=True
    )
    assert isinstance(outcomes[1], UpstreamError) and outcomes[1].status == 400
    good, fine = outcomes[0], outcomes[2]
    assert not isinstance(good, BaseException) and not isinstance(fine, BaseException)
    assert good.meta == "meta" and good.batch_requests == 1
    assert vectors(good.response) == [[0.0]]
    assert calls[0] == ["good", "bad", "fine"] and len(calls) == 4  # merged, then one each


async def test_unusual_requests_are_sent_alone(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(30.0, 3, caller(mock, session))
    big = {"model": MODEL, "input": ["a", "b", "c"]}  # max_inputs already
    empty = {"model": MODEL, "input": ["", "x"]}  # the upstream refuses empty strings
    results = await asyncio.wait_for(
        asyncio.gather(
            batcher.submit(group_key(big), big),
            batcher.submit(group_key(empty), empty),
            return_exceptions=True,
        ),
        5,
    )
    assert len(mock.requests) == 2 and batcher.calls == 2
    share = results[0]
    assert not isinstance(share, BaseException) and share.batch_requests == 1


async def test_usage_is_estimated_when_the_upstream_reports_none(
    session: aiohttp.ClientSession,
) -> None:
    async with MockUpstream(MockOptions(report_usage=False)) as mock:
        batcher: EmbeddingBatcher[None] = EmbeddingBatcher(0.02, 256, caller(mock, session))
        bodies = [{"model": MODEL, "input": "hello there world"}, {"model": MODEL, "input": "hi"}]
        shares = await asyncio.gather(*(batcher.submit(group_key(b), b) for b in bodies))
    for body, share in zip(bodies, shares, strict=True):
        assert share.estimated
        assert share.usage_share == count_prompt(body, "embeddings", MODEL)
        assert "usage" not in share.response


async def call_in_flight(batcher: EmbeddingBatcher[None], text: str) -> asyncio.Task[Any]:
    """A request of MODEL's group whose upstream call has started (one loop step after it
    was submitted): the group has a call in flight until it returns."""
    body = {"model": MODEL, "input": text}
    task = asyncio.create_task(batcher.submit(group_key(body), body))
    await asyncio.sleep(0)
    return task


async def test_a_client_leaving_does_not_disturb_the_others(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(0.05, 256, caller(mock, session))
    # A call of the group in flight (slow upstream): the next batch collects for the window.
    mock.options.latency_s = 0.5
    blocker = await call_in_flight(batcher, "b")
    bodies = [{"model": MODEL, "input": f"x{i}"} for i in range(4)]
    tasks = [asyncio.create_task(batcher.submit(group_key(b), b)) for b in bodies]
    await asyncio.sleep(0.01)
    tasks[1].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    for i in (0, 2, 3):
        share = outcomes[i]
        assert not isinstance(share, BaseException)
        assert vectors(share.response) == [embedding_for(f"x{i}")]
    await blocker
    assert [r.body for r in mock.requests] == [
        {"model": MODEL, "input": "b"},
        {"model": MODEL, "input": ["x0", "x2", "x3"]},  # x1 dropped
    ]


async def test_a_lone_request_never_waits_for_the_window(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(60.0, 256, caller(mock, session))
    body = {"model": MODEL, "input": "alone"}
    async with asyncio.timeout(5):  # a minute's window: only the no-call-in-flight rule sends it
        share = await batcher.submit(group_key(body), body)
    assert vectors(share.response) == [embedding_for("alone")]


async def test_requests_arriving_during_a_call_go_together_when_it_returns(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(60.0, 256, caller(mock, session))
    mock.options.latency_s = 0.1
    first = await call_in_flight(batcher, "a")
    later = [{"model": MODEL, "input": f"y{i}"} for i in range(5)]
    async with asyncio.timeout(5):  # well before the minute's window
        shares = await asyncio.gather(*(batcher.submit(group_key(b), b) for b in later))
    await first
    assert [vectors(s.response) for s in shares] == [[embedding_for(f"y{i}")] for i in range(5)]
    assert [r.body["input"] for r in mock.requests] == ["a", [f"y{i}" for i in range(5)]]  # type: ignore[index]


async def test_aclose_sends_collecting_batches(
    mock: MockUpstream, session: aiohttp.ClientSession
) -> None:
    batcher: EmbeddingBatcher[None] = EmbeddingBatcher(30.0, 256, caller(mock, session))
    body = {"model": MODEL, "input": "pending"}
    task = asyncio.create_task(batcher.submit(group_key(body), body))
    await asyncio.sleep(0.01)
    assert not task.done()
    await asyncio.wait_for(batcher.aclose(), 5)
    assert vectors((await task).response) == [embedding_for("pending")]
