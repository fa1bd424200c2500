"""Exact costs from usage and prices, and reading usage from every upstream shape."""

from __future__ import annotations

import pytest

from gateway.pricing.cost import cost_nano, usage_from_openai
from gateway.pricing.price import Price
from gateway.pricing.table import load_price_table
from gateway.types import Usage


def _table_price(model: str) -> Price:
    price = load_price_table().lookup(model)
    assert price is not None
    return price


def test_gpt_4o_with_cached_prompt() -> None:
    usage = Usage(prompt_tokens=1000, cached_prompt_tokens=400, completion_tokens=500)
    # (600 x 2.5 + 400 x 1.25 + 500 x 10) USD / 1e6 = 0.007 USD = 7_000_000 nano
    assert cost_nano(usage, _table_price("gpt-4o")) == 7_000_000


def test_gpt_4o_mini() -> None:
    usage = Usage(prompt_tokens=12_345, completion_tokens=678)
    # (12_345 x 0.15 + 678 x 0.6) USD / 1e6 = (1851.75 + 406.8) / 1e6 = 0.00225855 USD
    assert cost_nano(usage, _table_price("gpt-4o-mini")) == 2_258_550


def test_o3_mini_with_reasoning_and_cache() -> None:
    usage = Usage(
        prompt_tokens=2000, cached_prompt_tokens=1024, completion_tokens=3000, reasoning_tokens=2500
    )
    # input 976 x 1.1 = 1073.6; cached 1024 x 0.55 = 563.2;
    # output 500 x 4.4 = 2200; reasoning (at the output price) 2500 x 4.4 = 11000
    # total 14836.8 USD / 1e6 = 0.0148368 USD
    assert cost_nano(usage, _table_price("o3-mini")) == 14_836_800


def test_text_embedding_3_small_is_input_only() -> None:
    usage = Usage(prompt_tokens=8191)
    # 8191 x 0.02 USD / 1e6 = 0.00016382 USD
    assert cost_nano(usage, _table_price("text-embedding-3-small")) == 163_820


def test_each_part_at_its_own_price() -> None:
    price = Price(
        input_per_m=1_000, output_per_m=10_000, cached_input_per_m=100, reasoning_per_m=50
    )
    usage = Usage(
        prompt_tokens=3_000_000,
        cached_prompt_tokens=1_000_000,
        completion_tokens=4_000_000,
        reasoning_tokens=3_000_000,
    )
    # 2M x 1000 + 1M x 100 + 1M x 10000 + 3M x 50, per 1M: 2000 + 100 + 10000 + 150
    assert cost_nano(usage, price) == 12_250


def test_rounds_once_half_up() -> None:
    one = Price(input_per_m=1, output_per_m=1, cached_input_per_m=1, reasoning_per_m=1)
    assert cost_nano(Usage(prompt_tokens=500_000), one) == 1  # 0.5 nano -> 1
    assert cost_nano(Usage(prompt_tokens=499_999), one) == 0  # 0.499999 nano -> 0
    assert cost_nano(Usage(prompt_tokens=2_500_000), one) == 3  # 2.5 -> 3, not banker's 2
    # 0.5 + 0.5 nano = 1 nano; rounding each part first would give 2
    assert cost_nano(Usage(prompt_tokens=500_000, completion_tokens=500_000), one) == 1
    # 0.4 + 0.4 nano = 0.8 nano -> 1; rounding each part first would give 0
    assert cost_nano(Usage(prompt_tokens=400_000, completion_tokens=400_000), one) == 1


def test_nonsense_counts_are_clamped() -> None:
    # 2, 8, 0.5 and 8 nano per token
    price = Price(2_000_000, 8_000_000, 500_000, 8_000_000)
    # cached > prompt: all 10 prompt tokens are cached -> 10 x 0.5 = 5 nano
    assert cost_nano(Usage(prompt_tokens=10, cached_prompt_tokens=50), price) == 5
    # reasoning > completion: all 10 are reasoning -> 10 x 8 = 80 nano
    assert cost_nano(Usage(completion_tokens=10, reasoning_tokens=99), price) == 80
    negative = Usage(
        prompt_tokens=-5, cached_prompt_tokens=-1, completion_tokens=-3, reasoning_tokens=-2
    )
    assert cost_nano(negative, price) == 0
    assert cost_nano(Usage(), price) == 0


def test_usage_from_chat_completions() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0},
        }
    )
    assert usage == Usage(
        prompt_tokens=1000, cached_prompt_tokens=400, completion_tokens=500, reasoning_tokens=200
    )


def test_usage_from_chat_with_null_details_and_embeddings() -> None:
    assert usage_from_openai(
        {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
    ) == Usage(prompt_tokens=12, completion_tokens=3)
    assert usage_from_openai({"prompt_tokens": 8, "total_tokens": 8}) == Usage(prompt_tokens=8)


def test_usage_from_litellm_translated_chat() -> None:
    # litellm's Usage may carry Anthropic's cache fields next to OpenAI's (prompt includes them)
    usage = usage_from_openai(
        {"prompt_tokens": 1000, "completion_tokens": 10, "cache_read_input_tokens": 900}
    )
    assert usage == Usage(prompt_tokens=1000, cached_prompt_tokens=900, completion_tokens=10)


def test_usage_from_responses_api() -> None:
    usage = usage_from_openai(
        {
            "input_tokens": 328,
            "input_tokens_details": {"cached_tokens": 128},
            "output_tokens": 52,
            "output_tokens_details": {"reasoning_tokens": 40},
            "total_tokens": 380,
        }
    )
    assert usage == Usage(
        prompt_tokens=328, cached_prompt_tokens=128, completion_tokens=52, reasoning_tokens=40
    )


def test_usage_from_anthropic_adds_cache_reads_and_writes_to_the_prompt() -> None:
    usage = usage_from_openai(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 50,
            "output_tokens": 20,
        }
    )
    # prompt = 100 uncached + 900 read + 50 written
    assert usage == Usage(prompt_tokens=1050, cached_prompt_tokens=900, completion_tokens=20)
    assert usage_from_openai(
        {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": None}
    ) == Usage(prompt_tokens=7, completion_tokens=1)


@pytest.mark.parametrize(
    "garbage", [None, [], "usage", 42, {}, {"prompt_tokens": None}, {"unexpected": {"x": 1}}]
)
def test_usage_from_garbage_is_zero(garbage: object) -> None:
    assert usage_from_openai(garbage) == Usage()


def test_usage_reads_what_it_can() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": "12",  # a string: unreadable
            "completion_tokens": 7.0,
            "prompt_tokens_details": ["cached_tokens", 5],
            "completion_tokens_details": {"reasoning_tokens": True},
        }
    )
    assert usage == Usage(completion_tokens=7)
    assert (
        usage_from_openai(
            {"input_tokens": -4, "output_tokens": float("nan"), "input_tokens_details": "x"}
        )
        == Usage()
    )
    assert usage_from_openai({"input_tokens": 9.7, "output_tokens": float("inf")}) == Usage(
        prompt_tokens=9
    )


def test_usage_feeds_cost() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 400},
        }
    )
    # same figures as test_gpt_4o_with_cached_prompt
    assert cost_nano(usage, _table_price("gpt-4o")) == 7_000_000
