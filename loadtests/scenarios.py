"""The request mixes a target is measured with: path, body, and the wrk script that sends it.

The bodies here are the ones the wrk scripts in loadtests/wrk/ send (keep the two in step); the
Python fallback generator and the latency probe use these.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

WRK_DIR = Path(__file__).parent / "wrk"

_SYSTEM = "You are a concise assistant for an internal search team."


def _chat(n: str, *, stream: bool) -> bytes:
    body: dict[str, object] = {"model": "gpt-4o-mini"}
    if stream:
        body["stream"] = True
    body |= {
        "temperature": 0.7,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {
                "role": "user",
                "content": f"Summarise the ranking changes in release {n} in two sentences, "
                "mentioning click-through rate and latency.",
            },
        ],
    }
    return orjson.dumps(body)


def _embeddings(n: str) -> bytes:
    return orjson.dumps(
        {
            "model": "text-embedding-3-small",
            "input": f"query {n}: best budget laptops for students with long battery life",
        }
    )


def _embeddings_1536(n: str) -> bytes:
    return orjson.dumps(
        {
            "model": "text-embedding-3-small",
            "dimensions": 1536,
            "input": f"query {n}: best budget laptops for students with long battery life",
        }
    )


_CACHE_HIT = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": "What does our query-understanding service do?"},
        ],
    }
)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    stream: bool
    make_body: Callable[[str], bytes]  # from a per-request counter; constant for cache_hit

    @property
    def wrk_script(self) -> Path:
        return WRK_DIR / f"{self.name}.lua"

    def bodies(self) -> Callable[[], bytes]:
        """A body source like the wrk script's: distinct per call, except for cache_hit."""
        salt = random.randrange(10**9)
        counter = itertools.count(1)
        return lambda: self.make_body(f"{salt}-{next(counter)}")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("chat", "/v1/chat/completions", False, lambda n: _chat(n, stream=False)),
        Scenario("stream", "/v1/chat/completions", True, lambda n: _chat(n, stream=True)),
        Scenario("embeddings", "/v1/embeddings", False, _embeddings),
        Scenario("cache_hit", "/v1/chat/completions", False, lambda n: _CACHE_HIT),
    )
}

# On request only (cache_bound.py): embeddings the size of real ones, ~25 KB an answer where the
# mock's default is 8 dimensions; every one a miss the cache keeps.
LARGE_EMBEDDINGS = Scenario("embeddings_1536", "/v1/embeddings", False, _embeddings_1536)
