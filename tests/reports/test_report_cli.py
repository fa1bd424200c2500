"""`spendgate report ...` straight from a shared Redis and through a gateway's admin API, and
`spendgate aggregate` refusing the embedded store."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from gateway.aggregator import cli as aggregate_cli
from gateway.app.admin_reports import admin_report_routes
from gateway.app.middleware import error_middleware
from gateway.app.state import CLOCK, LIVE_CONFIG, REDIS
from gateway.reports import cli as report_cli
from tests.ledger import NOW, drain, event, produce
from tests.reports.test_admin_reports import ADMIN_KEY, DAY, MONTH, StubLiveConfig, make_config

CONFIG = """\
server:
  port: {port}
  admin_key: {admin_key}
store:
  url: {url}
providers:
  mock:
    kind: openai
    base_url: http://127.0.0.1:9/v1
    auth: none
models:
  gpt-4o:
    deployments:
      - provider: mock
        model: gpt-4o
teams:
  alpha: {{}}
  beta: {{}}
"""


def write_config(tmp_path: Path, url: str, port: int = 9) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(url=url, port=port, admin_key=ADMIN_KEY))
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate report")
    report_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await report_cli.run_async(parse(*argv))
    out, err = capsys.readouterr()
    return code, out, err


async def spend(redis: Redis) -> None:
    await produce(redis, [event(1, cost_nano=1_000_000_001), event(2, team="beta", cost_nano=2)])
    await drain(redis)


@pytest.fixture
async def server(redis: Redis) -> AsyncIterator[TestServer]:
    app = web.Application(middlewares=[error_middleware])
    app[LIVE_CONFIG] = StubLiveConfig(make_config())  # type: ignore[assignment]
    app[REDIS] = redis
    app[CLOCK] = NOW
    app.add_routes(admin_report_routes())
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


async def test_reports_straight_from_a_shared_redis(
    redis: Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await spend(redis)
    config = write_config(tmp_path, redis_url)
    code, out, err = await cli(
        capsys, "chargeback", "--period", MONTH, "--format", "csv", "--config", str(config)
    )
    assert code == 0, err
    rows = {r["team"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["alpha"]["total_usd"] == "1.000000001"
    assert rows["*"]["total_usd"] == "1.000000003"
    code, out, err = await cli(
        capsys, "showback", "--start", DAY, "--end", DAY, "--config", str(config)
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"showback {DAY}..{DAY} (USD)"
    assert lines[1].split()[:4] == ["team", "scope", "name", "cost_usd"]
    assert any(line.split()[:4] == ["alpha", "team", "alpha", "1.000000001"] for line in lines)
    out_file = tmp_path / "focus.csv"
    code, _, err = await cli(
        capsys, "focus", "--period", MONTH, "--config", str(config), "-o", str(out_file)
    )
    assert code == 0 and "wrote focus" in err
    rows_focus = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert sum(int(r["BilledCost"].replace(".", "")) for r in rows_focus) == 1_000_000_003


async def test_reports_through_the_admin_api(
    server: TestServer, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    await spend(redis)
    url = str(server.make_url("")).rstrip("/")
    common = ("--url", url, "--admin-key", ADMIN_KEY)
    code, out, err = await cli(capsys, "showback", "--period", MONTH, "--format", "json", *common)
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["total"]["cost_usd"] == "1.000000003"
    code, out, err = await cli(capsys, "focus", "--period", MONTH, *common)
    assert code == 0, err
    assert out.splitlines()[0].startswith("BillingAccountId,")
    code, _, err = await cli(capsys, "chargeback", *common[:2], "--admin-key", "sk-sg-wrong")
    assert code == 1 and "HTTP 401" in err and "--admin-key" in err


async def test_embedded_store_without_a_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "memory://", port=9)
    code, _, err = await cli(capsys, "chargeback", "--config", str(config))
    assert code == 1
    assert "no spendgate gateway answers at http://127.0.0.1:9" in err


async def test_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, "memory://"))
    for argv, message in (
        (("chargeback", "--start", "2026-11-01", "--end", "2026-11-02"), "use --period"),
        (("showback", "--start", "2026-11-01"), "both --start and --end"),
        (
            ("showback", "--period", "2026-11", "--start", "2026-11-01", "--end", "2026-11-02"),
            "not both",
        ),
        (("focus", "--period", "11/2026"), "YYYY-MM"),
    ):
        code, _, err = await cli(capsys, *argv, "--config", config)
        assert code == 1 and message in err, (argv, err)


def test_aggregate_refuses_the_embedded_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="spendgate aggregate")
    aggregate_cli.add_arguments(parser)
    config = write_config(tmp_path, "memory://")
    assert aggregate_cli.run(parser.parse_args(["--config", str(config)])) == 2
    assert "whose aggregator runs inside `spendgate serve`" in capsys.readouterr().err
