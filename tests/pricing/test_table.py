"""The bundled price table read as exact nano-USD per 1M tokens, lookups, and YAML overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.pricing import table
from gateway.pricing.price import Price
from gateway.pricing.table import (
    PriceTable,
    load_price_table,
    price_from_override,
    price_table_problem,
    read_price_table,
)

REPO = Path(__file__).resolve().parents[2]


# Figures from litellm 1.110's bundled table (USD per token), converted by hand:
# USD/token x 1e9 nano/USD x 1e6 tokens = USD/token x 1e15.
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # in 2.5e-06, out 1e-05, cache read 1.25e-06, no reasoning price (= output)
        ("gpt-4o", Price(2_500_000_000, 10_000_000_000, 1_250_000_000, 10_000_000_000)),
        # in 1.5e-07, out 6e-07, cache read 7.5e-08
        ("gpt-4o-mini", Price(150_000_000, 600_000_000, 75_000_000, 600_000_000)),
        # in 1.1e-06, out 4.4e-06, cache read 5.5e-07, reasoning billed as output
        ("o3-mini", Price(1_100_000_000, 4_400_000_000, 550_000_000, 4_400_000_000)),
        # in 2e-08, out 0.0, no cache read price (= input)
        ("text-embedding-3-small", Price(20_000_000, 0, 20_000_000, 0)),
    ],
)
def test_bundled_prices_are_exact_integers(model: str, expected: Price) -> None:
    assert load_price_table()[model] == expected


def test_explicit_reasoning_price_is_read() -> None:
    # dashscope/qwen-turbo: out 2e-07, output_cost_per_reasoning_token 5e-07
    price = load_price_table()["dashscope/qwen-turbo"]
    assert (price.output_per_m, price.reasoning_per_m) == (200_000_000, 500_000_000)


def test_table_skips_non_models_and_non_token_pricing() -> None:
    prices = load_price_table()
    assert len(prices) > 1000
    assert prices.problem is None
    assert price_table_problem() is None
    assert "sample_spec" not in prices
    assert "azure/gpt-image-1" not in prices  # input price only: an image model
    assert "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1" not in prices  # per image


def test_table_is_loaded_once() -> None:
    assert load_price_table() is load_price_table()


def test_loading_the_table_does_not_import_litellm() -> None:
    code = (
        "import sys\n"
        "from gateway.pricing.table import load_price_table\n"
        "assert len(load_price_table()) > 1000\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_missing_litellm_gives_an_empty_table_and_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(table, "litellm_dir", lambda: None)
    missing = load_price_table.__wrapped__()
    assert len(missing) == 0
    assert missing.lookup("gpt-4o") is None
    assert missing.problem is not None
    assert "litellm is not installed" in missing.problem


def test_lookup_order() -> None:
    first_party = Price(1, 2, 1, 2)
    azure = Price(3, 4, 3, 4)
    prices = PriceTable({"gpt-4o": first_party, "azure/gpt-4o": azure})
    assert prices.lookup("gpt-4o") is first_party
    assert prices.lookup("gpt-4o", "azure") is azure  # the provider's own price wins
    assert prices.lookup("gpt-4o", "openai") is first_party  # no "openai/gpt-4o" key
    assert prices.lookup("openai/gpt-4o") is first_party  # prefix stripped
    assert prices.lookup("azure/gpt-4o") is azure  # exact
    assert prices.lookup("gpt-9") is None
    assert prices.lookup("openai/") is None


def test_lookup_in_the_bundled_table() -> None:
    prices = load_price_table()
    assert prices.lookup("openai/gpt-4o-mini") == prices["gpt-4o-mini"]
    assert prices.lookup("gpt-4o", "azure") == prices["azure/gpt-4o"]


def test_read_price_table_tolerates_odd_entries(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(
        orjson.dumps(
            {
                "ok": {
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                    "cache_read_input_token_cost": None,  # null: defaults to input
                },
                "int-prices": {"input_cost_per_token": 0, "output_cost_per_token": 1},
                "string-price": {"input_cost_per_token": "1e-06", "output_cost_per_token": "2e-06"},
                "negative": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06},
                "boolean": {"input_cost_per_token": True, "output_cost_per_token": 1e-06},
                "nan": {"input_cost_per_token": "NaN", "output_cost_per_token": 1e-06},
                "word": {"input_cost_per_token": "cheap", "output_cost_per_token": 1e-06},
                "no-output": {"input_cost_per_token": 1e-06},
                "not-a-dict": [1, 2],
                "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
            }
        )
    )
    prices = read_price_table(path)
    assert dict(prices) == {
        # 3e-06 x 1e15 = 3_000_000_000; 1.5e-05 x 1e15 = 15_000_000_000
        "ok": Price(3_000_000_000, 15_000_000_000, 3_000_000_000, 15_000_000_000),
        # 1 USD per token = 1e15 nano per 1M
        "int-prices": Price(0, 1_000_000_000_000_000, 0, 1_000_000_000_000_000),
        "string-price": Price(1_000_000_000, 2_000_000_000, 1_000_000_000, 2_000_000_000),
    }
    assert prices.problem is None
    assert prices.path == path


def test_read_price_table_reports_unreadable_files(tmp_path: Path) -> None:
    missing = read_price_table(tmp_path / "absent.json")
    assert len(missing) == 0
    assert missing.problem is not None
    assert "cannot read" in missing.problem

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert "not JSON" in (read_price_table(garbage).problem or "")

    listing = tmp_path / "list.json"
    listing.write_text("[]")
    assert "not a JSON object" in (read_price_table(listing).problem or "")

    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert "no token-priced models" in (read_price_table(empty).problem or "")


def test_override_is_exact() -> None:
    # USD per 1M x 1e9 = nano per 1M; 0.15 and 0.6 are inexact binary floats but exact here.
    price = price_from_override(0.15, 0.6)
    assert price == Price(
        input_per_m=150_000_000,
        output_per_m=600_000_000,
        cached_input_per_m=150_000_000,  # defaults to input
        reasoning_per_m=600_000_000,  # defaults to output
        source="override",
    )
    assert price_from_override("2.50", 10, "1.25", "12") == Price(
        2_500_000_000, 10_000_000_000, 1_250_000_000, 12_000_000_000, source="override"
    )
    # 0.1 + 0.2 == 0.30000000000000004 -> 300_000_000.00000004 nano -> 300_000_000
    assert price_from_override(0.1 + 0.2, 0).input_per_m == 300_000_000


def test_override_rounds_sub_nano_half_up() -> None:
    assert price_from_override("0.0000000005", 0).input_per_m == 1  # 0.5 nano -> 1
    assert price_from_override("0.0000000004999", 0).input_per_m == 0
    assert price_from_override("0.0000000025", 0).input_per_m == 3  # half up, not half even


@pytest.mark.parametrize("bad", [-1, "-0.5", "abc", "", float("nan"), float("inf"), True])
def test_override_rejects_bad_prices(bad: object) -> None:
    with pytest.raises(ValueError, match="USD per 1M tokens"):
        price_from_override(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output price"):
        price_from_override(1, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reasoning price"):
        price_from_override(1, 1, reasoning_per_1m=bad)  # type: ignore[arg-type]
