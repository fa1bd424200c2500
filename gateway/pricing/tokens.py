"""Prompt token counts for budget reservations: tiktoken, offline, or an explicit byte estimate;
and usage estimated the same way for answers that report none.

tiktoken reads the vocabularies litellm bundles (already in tiktoken's cache format), so counting
never needs the network. Prompts are counted with OpenAI's documented recipe, per endpoint.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import tiktoken

from gateway.pricing.bundled import TOKENIZERS_SUBDIR, litellm_dir
from gateway.types import Usage

_log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

# OpenAI's recipe ("How to count tokens with tiktoken", openai-cookbook) for current chat models.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
# A low-detail image. High detail costs 85 + 170 per 512px tile, which we cannot know without
# fetching the image; the provider's usage settles the difference.
IMAGE_PART_TOKENS = 85
# Without a vocabulary: English and code average about 4 bytes per token, so 3 overestimates
# typical text. It is an estimate, NOT a bound; `cheap_upper_bound` gives a bound.
FALLBACK_BYTES_PER_TOKEN = 3

_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
)
# The vocabularies litellm bundles (o200k_harmony and p50k_edit reuse bundled files). Others
# (r50k_base, gpt2) would be downloaded on first use, so models mapped to them fall back instead.
_OFFLINE_ENCODINGS = frozenset(
    {"o200k_base", "o200k_harmony", "cl100k_base", "p50k_base", "p50k_edit"}
)
_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
# Audio and files are billed by duration or extracted content, not by the length of their base64;
# counting the base64 would overestimate by orders of magnitude, so they count 0 here.
_UNCOUNTED_PARTS = frozenset({"input_audio", "audio", "file", "input_file"})

ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")


def count_text(text: str, model: str) -> int:
    """Tokens in `text` for `model`; special-token strings count as plain text, never raise."""
    return _counter(model)(text)


def count_chat_prompt(
    messages: Sequence[object], model: str, tools: Sequence[object] | None = None
) -> int:
    """Prompt tokens of a chat request by OpenAI's recipe.

    3 per message, plus the tokens of each string field (+1 for `name`), plus 3 priming the
    reply. Content may be a string or a list of parts: text parts count their text, image parts
    a fixed IMAGE_PART_TOKENS, audio and file parts nothing. Nested fields such as `tool_calls`
    count the strings inside them. Tool definitions count as the tokens of their JSON.
    """
    count = _counter(model)
    total = _REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        if not isinstance(message, Mapping):
            total += _count_leaves(count, message)
            continue
        for key, value in message.items():
            if key == "content":
                total += _count_content(count, value)
            else:
                total += _count_leaves(count, value)
            if key == "name":
                total += _TOKENS_PER_NAME
    if tools:
        total += count(orjson.dumps(tools, default=str).decode())
    return total


def count_prompt(body: Mapping[str, object], endpoint: str, model: str) -> int:
    """Prompt tokens of a parsed request body for one of ENDPOINTS (e.g. "chat/completions").

    Not counted: context the upstream holds (Responses' `previous_response_id`), system prompts
    a provider adds, and audio/file parts. Raises ValueError for an unknown endpoint.
    """
    if endpoint == "chat/completions":
        tools = body.get("tools") or body.get("functions")
        return count_chat_prompt(_as_list(body.get("messages")), model, _as_list(tools))
    if endpoint == "completions":
        count = _counter(model)
        return _count_input(count, body.get("prompt")) + _count_leaves(count, body.get("suffix"))
    if endpoint == "embeddings":
        return _count_input(_counter(model), body.get("input"))
    if endpoint == "responses":
        messages: list[object] = []
        instructions = body.get("instructions")
        if instructions is not None:
            messages.append({"role": "system", "content": instructions})
        given = body.get("input")
        if isinstance(given, list):
            messages.extend(given)
        elif given is not None:
            messages.append({"role": "user", "content": given})
        return count_chat_prompt(messages, model, _as_list(body.get("tools")))
    raise ValueError(f"cannot count tokens for endpoint {endpoint!r}; known: {ENDPOINTS}")


def estimate_usage(body: dict[str, Any], endpoint: str, model: str, generated: str) -> Usage:
    """Usage counted with tiktoken, for upstreams (or streams cut short) that report none."""
    return Usage(
        prompt_tokens=count_prompt(body, endpoint, model),
        completion_tokens=count_text(generated, model) if generated else 0,
        estimated=True,
    )


def cheap_upper_bound(body_bytes_len: int) -> int:
    """A bound on a request's text tokens from its body size alone, without tokenizing.

    tiktoken's BPEs are byte-level: every token covers at least one byte of UTF-8 text, and JSON
    only adds bytes around text (quotes, escapes, keys), so the body's length in bytes bounds the
    tokens of its text, including the recipe's per-message overhead (a message's JSON punctuation
    alone is longer than 3 bytes). Not bounded: images, audio and files, billed by size or
    duration rather than by their bytes in the body, and context held upstream.
    """
    return max(body_bytes_len, 0)


def encoding_name_for(model: str) -> str:
    """The tiktoken vocabulary used for `model`: o200k_base for the gpt-4o, gpt-4.1, gpt-4.5,
    gpt-5, o1/o3/o4 families, cl100k_base for anything tiktoken does not know (an estimate for
    other vendors' models). A provider prefix ("azure/gpt-4o") is ignored.
    """
    base = model.rsplit("/", 1)[-1]
    try:
        name = tiktoken.encoding_name_for_model(base)
    except KeyError:
        name = None
    if name in _OFFLINE_ENCODINGS:
        return name
    return "o200k_base" if base.startswith(_O200K_PREFIXES) else "cl100k_base"


def counts_exactly(model: str) -> bool:
    """True when tiktoken's vocabulary for `model` loaded; False means counts are byte estimates.

    The first call per vocabulary loads it (0.1-0.3 s), so start-up can call this to warm up.
    """
    return _encoding(encoding_name_for(model)) is not None


@functools.lru_cache(maxsize=1024)  # keyed by client-sent model names, so bounded
def _counter(model: str) -> TokenCounter:
    encoding = _encoding(encoding_name_for(model))
    if encoding is None:
        return _byte_estimate
    encode = encoding.encode_ordinary
    return lambda text: len(encode(text))


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding | None:
    _use_bundled_vocabularies()
    try:
        encoding = tiktoken.get_encoding(name)
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors; ValueError: bad hash
        _log.warning(
            "tiktoken cannot load %s (%s); counting tokens as ceil(utf-8 bytes / %d) instead",
            name,
            exc,
            FALLBACK_BYTES_PER_TOKEN,
        )
        return None
    # The Rust encoder keeps its own copy of the vocabulary; tiktoken reads the Python one only
    # to pickle an Encoding, which nothing here does. Dropped, o200k and cl100k give back 37 MB
    # of resident memory.
    encoding._mergeable_ranks = {}
    return encoding


def _use_bundled_vocabularies() -> None:
    """Point tiktoken's cache at litellm's bundled files unless the user chose a cache dir.

    This sets TIKTOKEN_CACHE_DIR for the whole process, on first use rather than at import;
    litellm sets the same directory when it is imported.
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ or "DATA_GYM_CACHE_DIR" in os.environ:
        return
    directory = litellm_dir()
    if directory is not None and (directory / TOKENIZERS_SUBDIR).is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory / TOKENIZERS_SUBDIR)


def _byte_estimate(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // FALLBACK_BYTES_PER_TOKEN)


def _as_list(value: object) -> list[object]:
    """A field that should be a list; a lone item is wrapped so its tokens still count."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _count_content(count: TokenCounter, content: object) -> int:
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return _count_leaves(count, content)
    total = 0
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in _TEXT_PARTS and isinstance(part, Mapping):
            total += _count_leaves(count, part.get("text"))
        elif kind in _IMAGE_PARTS:
            total += IMAGE_PART_TOKENS
        elif kind not in _UNCOUNTED_PARTS:
            total += _count_leaves(count, part)
    return total


def _count_input(count: TokenCounter, value: object) -> int:
    """Completions `prompt` / embeddings `input`: a string, strings, token ids, or id lists."""
    if isinstance(value, list):
        if all(_is_token_id(item) for item in value):
            return len(value)
        return sum(
            len(item)
            if isinstance(item, list) and all(_is_token_id(i) for i in item)
            else _count_leaves(count, item)
            for item in value
        )
    return _count_leaves(count, value)


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_leaves(count: TokenCounter, value: object) -> int:
    """Tokens of every string (and number) inside a JSON value; iterative, so depth is no risk."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += count(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            total += count(str(item))
    return total
