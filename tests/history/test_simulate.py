"""`spendgate simulate`: a month's archived requests re-priced under a proposed config (a tier
rule for one team's short simple requests, a new price for the big model), every figure below
priced by hand."""

from __future__ import annotations

import argparse
import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gateway.archiveformat import STREAM_ID_FIELD
from gateway.config.loader import load_text
from gateway.history import simulate_cli
from gateway.history.simulate import expected_cost
from gateway.types import SpendEvent, Usage
from tests.analytics.test_recommendations import CONFIG
from tests.clock import T0
from tests.ledger import event

# The proposed config: big costs 8 USD per 1M input tokens instead of 10 (output still 30),
# and a tier named big sends alpha's short simple requests to small (1 in, 2 out).
PROPOSED = (
    CONFIG.replace("big-model: {input_per_1m: 10,", "big-model: {input_per_1m: 8,")
    + """\
tiers:
  big:
    candidates: [small, big]
    default: big
    rules:
      - name: short-simple
        use: small
        when: {prompt_tokens_lte: 1000, has_tools: false, has_response_format: false, team: [alpha]}
"""
)
ON_BIG = {"requested_model": "big", "served_model": "big-model", "deployment": "mock/big-model"}
SHORT = {**ON_BIG, "prompt_tokens": 200, "completion_tokens": 50, "cost_nano": 3_500_000}
SHORT_SIMPLE = {**SHORT, "shape": "simple", "fingerprint": "0" * 16}
LONG = {**ON_BIG, "prompt_tokens": 5000, "completion_tokens": 100, "cost_nano": 53_000_000}


def write_archive(root: Path, day: str, events: list[SpendEvent]) -> None:
    """Archive files as the aggregator writes them: `<team>/<day>.jsonl.gz`, JSON lines of the
    stream entry's fields and its id."""
    by_team: dict[str, list[bytes]] = {}
    for n, e in enumerate(events):
        record = {**e.to_fields(), STREAM_ID_FIELD: f"{e.ts_ms}-{n}"}
        by_team.setdefault(e.team, []).append(orjson.dumps(record))
    for team, lines in by_team.items():
        path = root / team / f"{day}.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


def seed(root: Path) -> None:
    write_archive(
        root,
        "2026-11-05",
        [
            *(event(i, **SHORT_SIMPLE) for i in range(3)),
            event(3, **LONG, shape="tools"),
            event(4, **{**SHORT_SIMPLE, "cache": "hit", "cost_nano": 0}),
            *(event(10 + i, team="beta", **SHORT_SIMPLE) for i in range(2)),
            event(12, team="beta", requested_model="legacy", cost_nano=1_000_000),
            event(13, team="gamma", kind="external", requested_model="", cost_nano=5_000_000),
        ],
    )
    # A request of 31 October that reached the stream after midnight: not November's.
    october = int(datetime(2026, 10, 31, 23, 59, tzinfo=UTC).timestamp() * 1000)
    write_archive(root, "2026-11-01", [event(20, ts_ms=october, **SHORT_SIMPLE)])


async def run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str
) -> tuple[int, str, str]:
    config = tmp_path / "proposed.yaml"
    config.write_text(PROPOSED)
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--archive-dir", str(tmp_path / "a"), *argv])
    code = await simulate_cli.run_async(args, clock=lambda: T0.timestamp())
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_month_repriced_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(tmp_path / "a")
    code, out, err = await run(capsys, tmp_path, "--period", "2026-11", "--json")
    assert code == 0, err
    document = orjson.loads(out)
    lines = {(x["team"], x["model"]): x for x in document["lines"]}
    # alpha's 3 short simple requests go to small: 200 * 1 + 50 * 2 = 300 per 1M = 0.0003 USD
    # each (were 3.5 mUSD); its long request with tools stays on big, at the new price:
    # 5,000 * 8 + 100 * 30 = 43,000 per 1M (was 53,000); the cache hit keeps its 0.
    alpha = lines[("alpha", "big")]
    assert alpha["requests"] == 5 and alpha["kept_events"] == 1
    assert alpha["current_usd"] == "0.063500000"  # 3 * 3.5 + 53 mUSD
    assert alpha["proposed_usd"] == "0.043900000"  # 3 * 0.3 + 43 mUSD
    assert alpha["difference_usd"] == "-0.019600000"
    assert alpha["proposed_models"] == {"small": 3, "big": 1}
    # beta's short requests do not match the rule (team alpha only): big at the new price,
    # 200 * 8 + 50 * 30 = 3,100 per 1M each.
    beta = lines[("beta", "big")]
    assert (beta["current_usd"], beta["proposed_usd"]) == ("0.007000000", "0.006200000")
    # A model the proposed config does not serve, and an external cost, keep their cost.
    assert lines[("beta", "legacy")]["proposed_usd"] == "0.001000000"
    assert lines[("beta", "legacy")]["kept_events"] == 1
    assert lines[("gamma", "(external)")]["proposed_usd"] == "0.005000000"
    assert lines[("gamma", "(external)")]["requests"] == 0
    # October's request in November's first file is left out.
    assert document["current_usd"] == "0.076500000"  # 63.5 + 7 + 1 + 5 mUSD
    assert document["proposed_usd"] == "0.056100000"  # 43.9 + 6.2 + 1 + 5 mUSD
    assert document["difference_usd"] == "-0.020400000"
    assert document["days_read"] == 2 and len(document["days_missing"]) == 28


async def test_the_table_has_a_total_and_says_what_it_could_not_reprice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(tmp_path / "a")
    code, out, err = await run(capsys, tmp_path, "--team", "alpha")  # default: October
    assert code != 0 and "no archived spend for 2026-10" in err
    code, out, err = await run(capsys, tmp_path, "--period", "2026-11", "--team", "alpha")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("simulate 2026-11 under ")
    assert lines[1].split() == list(simulate_cli.COLUMNS)
    assert lines[2].split() == [
        "alpha",
        "big",
        "5",
        "0.063500000",
        "0.043900000",
        "-0.019600000",
        "-30.9",
        "small:3,big:1",
    ]
    assert lines[3].split()[:6] == ["*", "*", "5", "0.063500000", "0.043900000", "-0.019600000"]
    assert "1 events keep their recorded cost" in out
    assert "days without archived spend: 2026-11-02..2026-11-04, 2026-11-06..2026-11-30" in out


async def test_bad_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(tmp_path / "a")
    for argv, message in (
        (("--period", "2026-13"), "a period is YYYY-MM"),
        (("--period", "2026-11", "--start", "2026-11-01"), "not both"),
        (("--start", "2026-11-02", "--end", "2026-11-01"), "before"),
    ):
        code, _, err = await run(capsys, tmp_path, *argv)
        assert code == 1 and message in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("models: {}\n")
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(tmp_path / "bad.yaml"), "--period", "2026-11"])
    assert await simulate_cli.run_async(args) == 1
    assert "bad.yaml" in capsys.readouterr().err


def test_a_weighted_route_costs_its_weighted_mean() -> None:
    config = load_text(
        CONFIG.replace(
            "small: {deployments: [{provider: mock, model: small-model}]}",
            "small: {deployments: [{provider: mock, model: small-model, weight: 3},"
            " {provider: mock, model: big-model, weight: 1, id: spill}]}",
        ),
        "<test>",
        env={},
    )
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    # small-model: (1,000 * 1 + 100 * 2) / 1M USD = 1.2 mUSD; big-model: (1,000 * 10 + 100 * 30)
    # / 1M = 13 mUSD; weights 3:1: (3 * 1.2 + 13) / 4 = 4.15 mUSD.
    assert expected_cost(config.models["small"], usage) == 4_150_000
