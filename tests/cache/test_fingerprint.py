"""The recommendations' per-request signals: hashes and a shape, never text.

Through the real gateway with the OpenAI SDK: every spend event carries a fingerprint, a prefix
fingerprint for a long prompt and a shape; the aggregator counts them into the signal rollups;
and not a word of any prompt is found anywhere in the store afterwards (streams, rollups, keys).
"""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from gateway import rediskeys
from gateway.app.state import PIPELINE, REDIS
from gateway.cache.fingerprint import (
    PREFIX_CHARS,
    prefix_fingerprint,
    request_fingerprint,
    request_shape,
)
from gateway.rollupformat import hour_bucket
from gateway.types import SpendEvent
from tests.conftest import Gateway
from tests.ledger import drain

SECRET = "zebra-quartz-5521"  # a word no spendgate key, field or metric name contains
LONG_SYSTEM = (SECRET + " is the house style. ") * (PREFIX_CHARS // 30 + 10)


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}


def test_identical_requests_share_a_fingerprint_and_transport_fields_do_not_count() -> None:
    a = request_fingerprint("chat/completions", chat("hi", temperature=0.0))
    assert a == request_fingerprint("chat/completions", chat("hi", temperature=0, stream=True))
    assert a != request_fingerprint("chat/completions", chat("hi!", temperature=0))
    assert a != request_fingerprint("completions", chat("hi", temperature=0))
    assert len(a) == 16 and int(a, 16) >= 0


def test_a_prefix_fingerprint_only_for_long_prompts_and_it_ignores_what_follows() -> None:
    head = "x" * PREFIX_CHARS
    assert prefix_fingerprint("chat/completions", chat("x" * 100)) is None
    one = prefix_fingerprint("chat/completions", chat(head + " question one"))
    two = prefix_fingerprint("chat/completions", chat(head + " question two"))
    assert one is not None and one == two
    other = prefix_fingerprint("chat/completions", chat("y" + head))
    assert other != one
    assert prefix_fingerprint("embeddings", {"model": "e", "input": head}) is None
    responses = {"model": "gpt-4o", "instructions": head, "input": "q"}
    assert prefix_fingerprint("responses", responses) is not None


@pytest.mark.parametrize(
    "text", ["x" * PREFIX_CHARS, "é" * PREFIX_CHARS, "\U0001f600" * PREFIX_CHARS]
)
def test_the_body_size_guard_never_hides_a_long_prompt(text: str) -> None:
    # The guard skips bodies smaller than PREFIX_CHARS bytes: JSON spends at least a byte per
    # character (non-ASCII as UTF-8 or \u escapes), so a long prompt's body is never that small.
    body = chat(text)
    raw = orjson.dumps(body)
    assert len(raw) >= PREFIX_CHARS
    given = prefix_fingerprint("chat/completions", body, len(raw))
    assert given is not None and given == prefix_fingerprint("chat/completions", body)
    short = chat(text[: PREFIX_CHARS // 8])
    assert prefix_fingerprint("chat/completions", short, len(orjson.dumps(short))) is None


def test_the_shape_says_tools_and_json_mode() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    json_mode = {"type": "json_object"}
    assert request_shape("chat/completions", chat("hi")) == "simple"
    assert request_shape("chat/completions", chat("hi", tools=tools)) == "tools"
    assert request_shape("chat/completions", chat("hi", response_format=json_mode)) == "json"
    both = chat("hi", tools=tools, response_format=json_mode)
    assert request_shape("chat/completions", both) == "tools+json"
    assert request_shape("embeddings", {"model": "e", "input": "hi"}) is None


async def test_the_store_holds_counts_and_fingerprints_of_requests_never_their_text(
    gateway: Gateway,
) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=gateway.keys["alpha"], max_retries=0
    ) as client:
        for _ in range(3):  # identical, with a long shared prefix
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[
                    {"role": "system", "content": LONG_SYSTEM},
                    {"role": "user", "content": f"{SECRET}: summarize"},
                ],
                max_tokens=5,
            )
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"say {SECRET}"}],
            response_format={"type": "json_object"},
            max_tokens=5,
        )
    await gateway.app[PIPELINE].accountant.drain()
    redis = gateway.app[REDIS]
    entries = await redis.xrange(rediskeys.events_stream("alpha"))
    events = [SpendEvent.from_fields(fields) for _, fields in entries]
    assert len(events) == 4
    long = [e for e in events if e.requested_model == "gpt-4o"]
    assert len({e.fingerprint for e in long}) == 1 and len({e.prefix for e in long}) == 1
    assert all(e.shape == "simple" for e in long)
    (short,) = (e for e in events if e.requested_model == "gpt-4o-mini")
    assert short.prefix is None and short.shape == "json"
    assert short.fingerprint not in (None, long[0].fingerprint)
    for e in events:
        assert e.fingerprint is not None and len(e.fingerprint) == 16
        int(e.fingerprint, 16)  # hex digits, nothing else

    await drain(redis)
    day = hour_bucket(events[0].ts_ms)[:8]
    route = await redis.hgetall(rediskeys.rollup("alpha", "d", day, "signals"))
    counts = {k.decode(): int(v) for k, v in route.items()}
    assert counts["gpt-4o|requests"] == 3 and counts["gpt-4o|long"] == 3
    assert counts["gpt-4o-mini|requests"] == 1

    # Not a byte of any prompt anywhere in the store: every key, field and value read back.
    needle = SECRET.encode()
    async for key in redis.scan_iter(match="*"):
        assert needle not in key
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            dump = b"".join(k + v for k, v in (await redis.hgetall(key)).items())
        elif kind == "stream":
            dump = b"".join(
                b"".join(k + v for k, v in fields.items()) for _, fields in await redis.xrange(key)
            )
        elif kind == "string":
            dump = await redis.get(key) or b""
        elif kind == "set":
            dump = b"".join(await redis.smembers(key))
        elif kind == "zset":
            dump = b"".join(await redis.zrange(key, 0, -1))
        else:
            dump = b"".join(await redis.lrange(key, 0, -1))
        assert needle not in dump, key
