"""Token counting: tiktoken from litellm's bundled vocabularies, OpenAI's recipe, fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import tiktoken

from gateway.pricing.bundled import TOKENIZERS_SUBDIR, litellm_dir
from gateway.pricing.tokens import (
    IMAGE_PART_TOKENS,
    cheap_upper_bound,
    count_chat_prompt,
    count_prompt,
    count_text,
    counts_exactly,
    encoding_name_for,
)

REPO = Path(__file__).resolve().parents[2]
MIXED = "Grüße aus Köln, 東京へようこそ!"  # 12 tokens in o200k_base, 17 in cl100k_base

# Refuse any connection: tiktoken would otherwise download a missing vocabulary.
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def _bundled() -> Path:
    directory = litellm_dir()
    assert directory is not None
    return directory / TOKENIZERS_SUBDIR


@pytest.fixture(autouse=True)
def _bundled_vocabularies(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process tests read the bundled files; the subprocess tests below cover the unset case.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(_bundled()))


def _tokens(text: str, encoding: str) -> int:
    return len(tiktoken.get_encoding(encoding).encode_ordinary(text))


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_NETWORK + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_count_text_matches_tiktoken() -> None:
    assert count_text("hello world", "gpt-4o") == 2
    assert count_text(MIXED, "gpt-4o") == _tokens(MIXED, "o200k_base") == 12
    assert count_text(MIXED, "gpt-4") == _tokens(MIXED, "cl100k_base") == 17
    assert count_text("", "gpt-4o") == 0
    assert counts_exactly("gpt-4o")
    assert counts_exactly("gpt-4")


def test_special_tokens_count_as_text() -> None:
    assert count_text("<|endoftext|>", "gpt-4o") == 7


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-2099-01-01", "o200k_base"),
        ("azure/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-3-5-sonnet-latest", "cl100k_base"),
        ("anthropic/claude-sonnet-4", "cl100k_base"),
        ("text-curie-001", "cl100k_base"),  # r50k_base is not bundled
    ],
)
def test_encoding_choice(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_chat_prompt_follows_openais_recipe() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "bob", "content": "Hello!"},
    ]
    # 3 + system(1) + "You are a helpful assistant."(6)
    # + 3 + user(1) + bob(1) + 1 for the name + "Hello!"(2)
    # + 3 priming the reply = 21
    assert count_chat_prompt(messages, "gpt-4o") == 21


def test_chat_content_parts_images_and_tools() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRiQ" * 1000}},
            ],
        }
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    tools_tokens = _tokens(orjson.dumps(tools).decode(), "o200k_base")
    assert tools_tokens == 29
    # 3 + user(1) + "What is in this image?"(6) + image 85 + audio 0 + 3 priming = 98
    assert IMAGE_PART_TOKENS == 85
    assert count_chat_prompt(messages, "gpt-4o") == 98
    assert count_chat_prompt(messages, "gpt-4o", tools) == 98 + 29


def test_chat_tool_calls_count_their_strings() -> None:
    call = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    message = {"role": "assistant", "content": None, "tool_calls": [{"function": call}]}
    expected = (
        3
        + _tokens("assistant", "o200k_base")
        + _tokens("get_weather", "o200k_base")
        + _tokens('{"city":"Paris"}', "o200k_base")
        + 3
    )
    assert count_chat_prompt([message], "gpt-4o") == expected


def test_count_prompt_per_endpoint() -> None:
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
    assert count_prompt(chat, "chat/completions", "gpt-4o") == 3 + 1 + 2 + 3

    assert count_prompt({"prompt": "hello world"}, "completions", "gpt-3.5-turbo-instruct") == 2
    assert count_prompt({"prompt": ["hello world", "Hello!"]}, "completions", "gpt-4") == 4
    assert count_prompt({"prompt": [1, 2, 3]}, "completions", "gpt-4") == 3

    model = "text-embedding-3-small"
    assert count_prompt({"input": "hello world"}, "embeddings", model) == 2
    assert count_prompt({"input": ["hello world", "Hello!"]}, "embeddings", model) == 4
    assert count_prompt({"input": [[1, 2, 3], [4, 5]]}, "embeddings", model) == 5

    # instructions as a system message: 3 + system(1) + "You are a helpful assistant."(6);
    # input as a user message: 3 + user(1) + "Hello!"(2); + 3 priming = 19
    responses = {"instructions": "You are a helpful assistant.", "input": "Hello!"}
    assert count_prompt(responses, "responses", "gpt-4o") == 19
    items = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]},
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:..."}]},
        ]
    }
    # (3 + 1 + 2) + (3 + 1 + 85) + 3 = 98
    assert count_prompt(items, "responses", "gpt-4o") == 98

    with pytest.raises(ValueError, match="unknown-endpoint"):
        count_prompt({}, "unknown-endpoint", "gpt-4o")


def test_count_prompt_survives_odd_bodies() -> None:
    assert count_prompt({}, "chat/completions", "gpt-4o") == 3
    assert count_prompt({"messages": None}, "chat/completions", "gpt-4o") == 3
    # a lone message where a list belongs still counts: 3 + user(1) + Hello!(2) + 3
    lone = {"messages": {"role": "user", "content": "Hello!"}}
    assert count_prompt(lone, "chat/completions", "gpt-4o") == 9
    nested: object = "Hello!"
    for _ in range(5000):  # deeper than Python's recursion limit
        nested = [nested]
    assert count_prompt({"input": nested}, "embeddings", "gpt-4o") == 2
    assert count_prompt({"prompt": None}, "completions", "gpt-4") == 0


def test_cheap_upper_bound_bounds_the_count() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": MIXED * 20},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": ""},
        ],
    }
    raw = orjson.dumps(body)
    bound = cheap_upper_bound(len(raw))
    assert bound == len(raw)
    for model in ("gpt-4o", "gpt-4"):
        assert count_prompt(body, "chat/completions", model) <= bound
    assert cheap_upper_bound(-1) == 0


def test_bundled_vocabularies_need_no_network_and_no_env() -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    code = (
        "import os, sys\n"
        "from gateway.pricing.tokens import count_text, counts_exactly\n"
        "assert 'TIKTOKEN_CACHE_DIR' not in os.environ, 'set at import'\n"
        f"assert count_text({MIXED!r}, 'gpt-4o') == 12\n"
        f"assert count_text({MIXED!r}, 'gpt-4') == 17\n"
        "assert counts_exactly('gpt-4o') and counts_exactly('gpt-4')\n"
        "print(os.environ['TIKTOKEN_CACHE_DIR'])\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    done = _run(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(_bundled())


def test_a_users_cache_dir_is_respected(tmp_path: Path) -> None:
    # An empty cache and no network: tiktoken cannot load, so counting falls back to the
    # explicit byte estimate ceil(utf-8 bytes / 3), and the user's setting is left alone.
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    # "Grüße aus Köln, " is 19 bytes (ü, ß, ö take 2), "東京へようこそ!" 7 x 3 + 1 = 22
    assert len(MIXED.encode()) == 41
    code = (
        "import os\n"
        "from gateway.pricing.tokens import count_text, counts_exactly\n"
        f"assert count_text({MIXED!r}, 'gpt-4o') == 14  # ceil(41 / 3)\n"
        "assert not counts_exactly('gpt-4o')\n"
        f"assert os.environ['TIKTOKEN_CACHE_DIR'] == {str(tmp_path)!r}\n"
    )
    done = _run(code, env)
    assert done.returncode == 0, done.stderr
    assert "counting tokens as ceil(utf-8 bytes / 3)" in done.stderr
