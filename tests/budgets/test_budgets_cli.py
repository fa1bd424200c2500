"""`spendgate budgets list|usage|set|delete` through a gateway's admin API (a small test app on a
real socket) and straight against a shared Redis, on a fixed clock."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway import clikit, rediskeys
from gateway.app.state import LEDGER
from gateway.budgets import cli as budgets_cli
from gateway.budgets.ledger import BudgetLedger
from gateway.budgets.registry import BudgetRegistry
from gateway.types import SpendEvent
from tests.budgets.support import FakeClock, real_db_url
from tests.budgets.test_admin_budgets import ADMIN_KEY, CONFIG_BUDGET, make_app

CONFIG = """\
server:
  port: 9
  admin_key: {admin_key}
store:
  url: {url}
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}}
models:
  gpt-4o-mini: {{deployments: [{{provider: mock, model: gpt-4o-mini}}]}}
teams:
  alpha:
    budgets:
      - {{name: alpha-monthly, period: monthly, limit_usd: 100}}
  beta: {{}}
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate budgets")
    budgets_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def cli(
    capsys: pytest.CaptureFixture[str], *argv: str, clock: FakeClock | None = None
) -> tuple[int, str, str]:
    code = await budgets_cli.run_async(parse(*argv), clock=clock or FakeClock())
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def server(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestServer]:
    monkeypatch.delenv(clikit.ADMIN_KEY_ENV, raising=False)
    test_server = TestServer(make_app(clock), host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


def spend(clock: FakeClock, cost_nano: int, event_id: str = "e1") -> SpendEvent:
    return SpendEvent(
        event_id=event_id, ts_ms=int(clock() * 1000), team="alpha", cost_nano=cost_nano
    )


async def test_through_the_admin_api(
    server: TestServer, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", str(server.make_url("")).rstrip("/"), "--admin-key", ADMIN_KEY)
    code, out, err = await cli(
        capsys, "set", "alpha-search", *common, "--team", "alpha", "--period", "daily",
        "--limit-usd", "12.50", "--limit-tokens", "1000", "--scope", "project",
        "--match", "search", "--thresholds", "50,100",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "created budget alpha-search"
    assert lines[1].split() == [
        "name", "team", "period", "unit", "limit", "spent", "reserved", "remaining", "used",
        "period_end",
    ]  # fmt: skip
    assert lines[2].split() == [
        "alpha-search", "alpha", "d20310314", "usd", "12.50", "0.00", "0.00", "12.50", "0.0%",
        "2031-03-15T00:00:00Z",
    ]  # fmt: skip
    assert lines[3].split()[3:8] == ["tokens", "1000", "0", "0", "1000"]

    # Spend lands on the config budget; usage reads it back from the same counters.
    app = server.app
    await app[LEDGER].settle(None, "alpha", "r1", [CONFIG_BUDGET], spend(clock, 25_500_000_000))
    code, out, err = await cli(capsys, "usage", *common, "--team", "alpha")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows[0] == [
        "alpha-monthly", "alpha", "m203103", "usd", "100.00", "25.50", "0.00", "74.50", "25.5%",
        "2031-04-01T00:00:00Z",
    ]  # fmt: skip
    assert [row[0] for row in rows] == ["alpha-monthly", "alpha-search", "alpha-search"]

    code, out, _ = await cli(capsys, "list", *common)
    header, *rows = (line.split() for line in out.splitlines())
    assert header[:6] == ["name", "team", "scope", "match", "period", "limit_usd"]
    assert [(r[0], r[-1]) for r in rows] == [("alpha-monthly", "config"), ("alpha-search", "admin")]

    # Replacing keeps the name; --json prints the budget as the API answers it.
    code, out, err = await cli(
        capsys, "set", "alpha-search", *common, "--team", "alpha", "--period", "daily",
        "--limit-usd", "20", "--json",
    )  # fmt: skip
    assert code == 0, err
    replaced = orjson.loads(out)
    assert (replaced["limit_usd"], replaced["scope"], replaced["thresholds"]) == (
        "20.00",
        "team",
        [50, 75, 90, 100],
    )

    code, out, _ = await cli(capsys, "delete", *common, "alpha-search")
    assert (code, out) == (0, "deleted budget alpha-search\n")
    code, _, err = await cli(capsys, "delete", *common, "alpha-search")
    assert code == 1 and "no admin budget named 'alpha-search'" in err
    code, _, err = await cli(capsys, "delete", *common, "alpha-monthly")
    assert code == 1 and "declared in the config file" in err


async def test_set_refuses_what_the_yaml_refuses(
    server: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--url", str(server.make_url("")).rstrip("/"), "--admin-key", ADMIN_KEY)
    code, _, err = await cli(
        capsys, "set", "bad name", *common, "--team", "gamma", "--period", "daily",
        "--scope", "project",
    )  # fmt: skip
    # The YAML's words; a bad name leaves nothing to check the team or the scope against.
    assert (code, err) == (
        1,
        "spendgate budgets: name: budget names use only A-Z, a-z, 0-9, _, . and -, "
        "got str 'bad name' (HTTP 400)\n",
    )
    code, _, err = await cli(
        capsys, "set", "ok", *common, "--team", "alpha", "--period", "daily", "--limit-usd", "0"
    )
    assert code == 1 and "limit_usd: must be greater than 0" in err and "(HTTP 400)" in err


async def test_straight_against_a_shared_redis(
    real_redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = real_db_url(real_redis_url)
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(url=url, admin_key=ADMIN_KEY))
    redis = Redis.from_url(url)
    await redis.flushdb()
    # A month's last second: the period ends a second later, and the next one is another month.
    clock = FakeClock()
    clock.set(datetime(2031, 3, 31, 23, 59, 59, tzinfo=UTC))
    try:
        code, out, err = await cli(
            capsys, "set", "beta-total", "--config", str(config), "--team", "beta",
            "--period", "total", "--limit-tokens", "5000", clock=clock,
        )  # fmt: skip
        assert code == 0, err
        assert out.splitlines()[2].split()[2:] == [
            "total", "tokens", "5000", "0", "0", "5000", "0.0%", "never",
        ]  # fmt: skip

        registry = BudgetRegistry(redis, ())
        await registry.refresh()
        (beta_total,) = registry.all("beta")
        ledger = BudgetLedger(redis, clock=clock)
        reservation = await ledger.reserve("beta", "r1", [beta_total], 0, 1200, 60)
        assert reservation.ok
        code, out, err = await cli(capsys, "usage", "--config", str(config), clock=clock)
        assert code == 0, err
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
        assert rows["alpha-monthly"][2:] == [
            "m203103", "usd", "100.00", "0.00", "0.00", "100.00", "0.0%", "2031-04-01T00:00:00Z",
        ]  # fmt: skip
        assert rows["beta-total"][3:8] == ["tokens", "5000", "0", "1200", "3800"]

        clock.advance(1)  # the first second of April: a new monthly period
        code, out, _ = await cli(capsys, "usage", "--json", "--team", "alpha", "--config",
                                 str(config), clock=clock)  # fmt: skip
        (alpha,) = orjson.loads(out)["data"]
        assert (alpha["period_id"], alpha["period_end"]) == ("m203104", "2031-05-01T00:00:00Z")

        code, _, err = await cli(capsys, "delete", "alpha-monthly", "--config", str(config))
        assert code == 1 and "teams.<team>.budgets or budgets.rules" in err
        assert (await cli(capsys, "delete", "beta-total", "--config", str(config)))[0] == 0
        assert await redis.hlen(rediskeys.admin_budgets()) == 0
    finally:
        await redis.flushdb()
        await redis.aclose()
