"""Graceful stop of a real `spendgate serve` (a rolling deploy's SIGTERM) during 50 open
streams from a mock upstream that writes slowly: the port closes at once; streams that finish
within `server.drain_s` finish whole; those still open at the deadline end with an OpenAI error
event, never before it; every stream is billed exactly once; the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.providers.mock import MockUpstream
from tests.serving import Served, budget_counter, ledger, store_of

STREAMS = 50
WORDS = 40  # the mock's answer: one chunk per word


@pytest.fixture
async def served(mock_upstream: MockUpstream, tmp_path: Path) -> AsyncIterator[Served]:
    gateway = Served(tmp_path, mock_upstream.base_url)
    yield gateway
    gateway.kill()


class Stream:
    """One client stream: its request id, the events it received and when it ended."""

    def __init__(self) -> None:
        self.request_id = ""
        self.events: list[bytes] = []
        self.started = asyncio.Event()
        self.ended_at = 0.0

    async def run(self, http: aiohttp.ClientSession, url: str, key: str) -> None:
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "count slowly"}],
            "max_tokens": WORDS,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as reply:
            assert reply.status == 200
            self.request_id = reply.headers["x-request-id"]
            buffer = b""
            async for chunk in reply.content.iter_any():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n\n")
                self.events += [e for e in complete if e.startswith(b"data: ")]
                if self.events:
                    self.started.set()
        self.ended_at = time.monotonic()

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == b"data: [DONE]"

    @property
    def error(self) -> dict[str, object] | None:
        last = orjson.loads(self.events[-1][6:]) if self.events and not self.done else None
        return last.get("error") if isinstance(last, dict) else None


async def _streams_then_sigterm(served: Served) -> tuple[list[Stream], float]:
    """Start the streams, wait until each has its first event, send SIGTERM; return the
    streams once all have ended, and when SIGTERM was sent (monotonic)."""
    key = await served.new_key()
    streams = [Stream() for _ in range(STREAMS)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(s.run(http, served.url, key)) for s in streams]
        async with asyncio.timeout(30):
            await asyncio.gather(*(s.started.wait() for s in streams))
        sent_at = time.monotonic()
        served.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        with pytest.raises(aiohttp.ClientConnectionError):  # the port closed at once
            async with http.get(served.url + "/healthz"):
                pass
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    return streams, sent_at


async def _billed_once(served: Served, streams: list[Stream]) -> None:
    async with store_of(served) as redis:
        events = await ledger(redis)
        counter = await budget_counter(redis)
    assert sorted(e.request_id for e in events) == sorted(s.request_id for s in streams)
    assert len({e.event_id for e in events}) == STREAMS
    assert counter["spent_nano"] == sum(e.cost_nano for e in events)
    assert counter.get("reserved_nano", 0) == 0


async def test_streams_within_the_drain_time_finish_whole(
    served: Served, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.completion_tokens = WORDS
    mock_upstream.options.chunk_delay_s = 0.05  # 40 words: 2 s per stream
    served.drain_s = 20
    await served.start()
    streams, _ = await _streams_then_sigterm(served)
    assert await served.exit_code() == 0, served.log()[-3000:]
    assert all(s.done for s in streams)
    await _billed_once(served, streams)
    async with store_of(served) as redis:
        events = await ledger(redis)
    assert {e.completion_tokens for e in events} == {WORDS}
    assert {e.outcome for e in events} == {"ok"}


async def test_streams_still_open_at_the_deadline_end_with_an_error_event_and_are_billed(
    served: Served, mock_upstream: MockUpstream
) -> None:
    mock_upstream.options.completion_tokens = WORDS
    mock_upstream.options.chunk_delay_s = 0.25  # 40 words: 10 s per stream
    served.drain_s = 2
    await served.start()
    streams, sent_at = await _streams_then_sigterm(served)
    assert await served.exit_code() == 0, served.log()[-3000:]
    for stream in streams:
        assert not stream.done
        assert stream.error is not None and stream.error["code"] == "shutting_down"
        assert stream.ended_at - sent_at >= served.drain_s  # none cut before the drain time
    await _billed_once(served, streams)
    async with store_of(served) as redis:
        events = await ledger(redis)
    # What was generated before the cut: more than the first word, less than the whole.
    assert all(0 < e.completion_tokens < WORDS for e in events)
    assert {e.outcome for e in events} == {"drain_deadline"}


async def test_a_second_serve_on_the_same_data_directory_is_refused(
    served: Served, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    await served.start()
    other = Served(tmp_path / "other", mock_upstream.base_url, store_dir=served.data_dir)
    with pytest.raises(AssertionError, match="in use by another spendgate process"):
        await other.start()
    assert await served.stop() == 0
