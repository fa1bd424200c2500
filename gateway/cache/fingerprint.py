"""The cheap per-request signals the recommendations count: hashes and a shape, never text.

`request_fingerprint` hashes the canonical request (the cache key's content, without its
namespace), so identical requests share it whether or not the cache is on; `prefix_fingerprint`
hashes the first `PREFIX_CHARS` characters of a long prompt (what a provider's prompt cache
would reuse); `request_shape` says whether a request offers tools or asks for JSON. The spend
event carries these three strings; no prompt text leaves the request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from gateway.bodies import response_format
from gateway.cache.key import canonical_request

# A prompt this long (about 1,024 tokens, where OpenAI's automatic prompt caching starts) has a
# prefix fingerprint; shorter prompts have none.
PREFIX_CHARS = 4096
_DIGEST_BYTES = 8  # 16 hex digits: collisions among a day's distinct requests are negligible
_CHAT_ENDPOINTS = frozenset({"chat/completions", "completions", "responses"})


def request_fingerprint(endpoint: str, body: Mapping[str, Any]) -> str:
    """A short hash of everything in the request that can change its answer."""
    document = (endpoint, body.get("model"), canonical_request(body))
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


def prefix_fingerprint(
    endpoint: str, body: Mapping[str, Any], size: int | None = None
) -> str | None:
    """A short hash of the prompt's first PREFIX_CHARS characters, or None when it is shorter
    (or the endpoint has no prompt a provider caches). `size`: the body's size in bytes as
    received, when known: JSON takes at least a byte per character, so a smaller body has no
    prompt that long (most requests: nothing to walk)."""
    if endpoint not in _CHAT_ENDPOINTS or (size is not None and size < PREFIX_CHARS):
        return None
    parts: list[str] = []
    size = 0
    for text in _prompt_texts(endpoint, body):
        parts.append(text)
        size += len(text)
        if size >= PREFIX_CHARS:
            prefix = "".join(parts)[:PREFIX_CHARS]
            return hashlib.blake2b(prefix.encode(), digest_size=_DIGEST_BYTES).hexdigest()
    return None


def request_shape(endpoint: str, body: Mapping[str, Any]) -> str | None:
    """ "simple", or what makes the request more than a plain prompt ("tools", "json",
    "tools+json"); None for endpoints without a prompt to answer (embeddings)."""
    if endpoint not in _CHAT_ENDPOINTS:
        return None
    tools = bool(body.get("tools") or body.get("functions"))
    json_mode = response_format(body) is not None
    if tools and json_mode:
        return "tools+json"
    return "tools" if tools else "json" if json_mode else "simple"


def _prompt_texts(endpoint: str, body: Mapping[str, Any]) -> Iterator[str]:
    """The prompt's texts in order (role markers included, as a provider sees the prefix)."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            yield prompt
        elif isinstance(prompt, list):
            yield from (p for p in prompt if isinstance(p, str))
        return
    if endpoint == "responses":
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            yield "system\n" + instructions
        given = body.get("input")
        if isinstance(given, str):
            yield "user\n" + given
            return
        messages = given if isinstance(given, list) else []
    else:
        raw = body.get("messages")
        messages = raw if isinstance(raw, list) else []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        yield f"{role if isinstance(role, str) else ''}\n"
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    yield part["text"]
