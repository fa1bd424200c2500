"""Deterministic token accounting and reply text for the mock upstream.

Tests compute the expected usage with the same functions, so the formulas below are the contract:
a "token" is a whitespace-separated word, and the reply is "mock reply 1 2 3 ..." word by word.
Tool-call and JSON-mode replies report the same counts as the text reply they stand in for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.providers.mock.errors import MockBadRequest
from gateway.providers.mock.options import MockOptions

PER_MESSAGE_TOKENS = 3


def prompt_tokens_for(body: Mapping[str, Any]) -> int:
    """The prompt token count the mock reports for a request body, any API.

    Every message-like item costs 3 plus the words of its content: each entry of `messages`
    (chat, Anthropic), each dict entry of `input` (Responses), and `system` (Anthropic) or
    `instructions` (Responses) when present. Content is a string or a list of parts whose
    `text` strings count. A plain `prompt` / `input` (completions, embeddings, Responses)
    costs its words if a string, the sum over a list of strings, its length if a list of
    token ids, and the sum of lengths for a list of token lists. Tools, schemas and other
    parameters are free. Cached tokens are part of this number, as with OpenAI.
    """
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        total += _messages_tokens(messages)
    for key in ("system", "instructions"):
        if body.get(key):
            total += PER_MESSAGE_TOKENS + content_words(body[key])
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            total += len(value.split())
        elif isinstance(value, list):
            total += _list_tokens(value)
    return total


def content_words(content: object) -> int:
    """Words in a message content: a string, or a list of parts with `text` (or plain strings)."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        words = 0
        for part in content:
            if isinstance(part, str):
                words += len(part.split())
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                words += len(part["text"].split())
        return words
    return 0


def _messages_tokens(messages: list[Any]) -> int:
    return sum(
        PER_MESSAGE_TOKENS + content_words(m.get("content"))
        for m in messages
        if isinstance(m, dict)
    )


def _list_tokens(items: list[Any]) -> int:
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(item.split())
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, list):
            total += len(item)
        elif isinstance(item, dict):
            total += PER_MESSAGE_TOKENS + content_words(item.get("content"))
    return total


@dataclass(frozen=True, slots=True)
class Counts:
    """What one request consumes. `words` is the visible reply length of each choice."""

    prompt: int
    cached: int
    reasoning: int
    words: int
    choices: int
    truncated: bool

    @property
    def completion(self) -> int:
        # Reasoning tokens are part of completion tokens, as OpenAI reports them.
        return self.words * self.choices + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def counts_for(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    options: MockOptions,
    *,
    limit_keys: tuple[str, ...],
    choices: int = 1,
) -> Counts:
    """Counts for a request: the reply is `x-mock-completion-tokens` (header) or
    `options.completion_tokens` words per choice, cut to the first of `limit_keys` present
    (e.g. `max_tokens`), in which case `truncated` is set. `metadata.mock_cached_tokens` /
    `mock_reasoning_tokens` (or headers `x-mock-cached-tokens` / `x-mock-reasoning-tokens`)
    set the cached share of the prompt (capped at the prompt) and extra reasoning tokens.
    """
    wanted = as_count(headers.get("x-mock-completion-tokens"), options.completion_tokens)
    limit = next((body[k] for k in limit_keys if body.get(k) is not None), None)
    words = wanted if limit is None else min(wanted, as_count(limit, wanted))
    metadata = body.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}
    prompt = prompt_tokens_for(body)
    cached = as_count(meta.get("mock_cached_tokens", headers.get("x-mock-cached-tokens")), 0)
    reasoning = as_count(
        meta.get("mock_reasoning_tokens", headers.get("x-mock-reasoning-tokens")), 0
    )
    return Counts(
        prompt=prompt,
        cached=min(cached, prompt),
        reasoning=reasoning,
        words=words,
        choices=choices,
        truncated=words < wanted,
    )


def as_count(value: object, default: int) -> int:
    """A non-negative integer from a JSON number or numeric string; `default` when absent."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MockBadRequest(f"expected an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise MockBadRequest(f"expected an integer, got {value!r}") from None
    if number < 0:
        raise MockBadRequest(f"expected a non-negative integer, got {number}")
    return number


def reply_words(count: int) -> list[str]:
    """The reply as words: "mock", "reply", "1", "2", ... (exactly `count` of them)."""
    head = ["mock", "reply"][:count]
    return head + [str(i) for i in range(1, count - 1)]


def split_deltas(text: str) -> list[str]:
    """Text cut into stream deltas, one word each (with its leading space), that concatenate
    back to exactly `text`."""
    if not text:
        return []
    words = text.split(" ")
    return words[:1] + [" " + w for w in words[1:]]


def reply_text(count: int) -> str:
    return " ".join(reply_words(count))


def openai_usage(counts: Counts) -> dict[str, Any]:
    """The `usage` object of chat and text completions."""
    return {
        "prompt_tokens": counts.prompt,
        "completion_tokens": counts.completion,
        "total_tokens": counts.total,
        "prompt_tokens_details": {"cached_tokens": counts.cached},
        "completion_tokens_details": {"reasoning_tokens": counts.reasoning},
    }
