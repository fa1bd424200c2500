"""`spendgate report anomalies` and `spendgate anomalies show|feedback`, straight from a shared
Redis and through a running gateway's admin API: the same anomaly, causes and feedback."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from gateway.anomalies import cli as anomalies_cli
from gateway.app.state import REDIS
from gateway.reports import cli as report_cli
from gateway.store.connect import close_store
from tests.anomalies.support import ANOMALY_ID, plant, plant_beside_detector
from tests.clock import T0, FakeClock
from tests.conftest import ADMIN_KEY, Gateway
from tests.ledger import db_url, open_db

ANOMALIES_DB = 5  # the real-Redis database of these tests
ID = ANOMALY_ID
CONFIG = """\
server:
  admin_key: {admin_key}
store:
  url: {url}
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:9/v1", auth: none}}
models:
  gpt-4o:
    deployments: [{{provider: mock, model: gpt-4o}}]
teams:
  alpha: {{}}
  beta: {{}}
"""


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    client = await open_db(real_redis_url, ANOMALIES_DB)
    yield client
    await client.flushdb()
    await close_store(client)


def shared_config(tmp_path: Path, real_redis_url: str) -> str:
    path = tmp_path / "gateway.yaml"
    url = db_url(real_redis_url, ANOMALIES_DB)
    path.write_text(CONFIG.format(url=url, admin_key=ADMIN_KEY))
    return str(path)


def parse(module: object, prog: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser.parse_args(argv)


async def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = parse(report_cli, "spendgate report", "anomalies", *argv)
    code = await report_cli.run_async(args, clock=FakeClock())
    out, err = capsys.readouterr()
    return code, out, err


async def anomalies(
    capsys: pytest.CaptureFixture[str], *argv: str, clock: FakeClock | None = None
) -> tuple[int, str, str]:
    args = parse(anomalies_cli, "spendgate anomalies", *argv)
    code = await anomalies_cli.run_async(args, clock=clock or FakeClock())
    out, err = capsys.readouterr()
    return code, out, err


async def test_from_a_shared_store(
    redis: Redis, real_redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await plant(redis)
    config = shared_config(tmp_path, real_redis_url)
    code, out, _ = await report(
        capsys, "--since", "2026-11-01", "--format", "csv", "--config", config
    )
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["id"] == ID and row["severity"] == "high" and row["excess_usd"] == "120.000000000"
    assert row["causes"].startswith("key key_0000000000aa +$118.00 (98%; new key, never seen")
    code, out, _ = await report(capsys, "--team", "beta", "--format", "json", "--config", config)
    assert code == 0 and orjson.loads(out)["data"] == []
    code, out, _ = await report(capsys, "--since", "2026-11-01", "--config", config)
    assert out.startswith("anomalies since 2026-11-01T00:00:00Z (USD)\n") and ID in out

    code, out, _ = await anomalies(capsys, "show", ID, "--config", config)
    assert code == 0
    assert f"{ID}: spike in team alpha" in out
    assert "1. key key_0000000000aa: 118.000000000 USD (98%; new key, never seen before)" in out
    clock = FakeClock(T0.timestamp() + 3600)
    code, out, _ = await anomalies(
        capsys, "feedback", ID, "expected", "--note", "load test", "--config", config, clock=clock
    )
    assert code == 0 and "feedback: expected (2026-11-05T11:30:00Z): load test" in out
    code, out, _ = await anomalies(capsys, "show", ID, "--json", "--config", config)
    assert orjson.loads(out)["feedback"] == {
        "verdict": "expected",
        "note": "load test",
        "at": "2026-11-05T11:30:00Z",
    }
    code, _, err = await anomalies(capsys, "show", "nope", "--config", config)
    assert code == 1 and err == "spendgate anomalies: no anomaly 'nope'\n"


async def test_through_the_admin_api(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    await plant_beside_detector(gateway.app[REDIS])
    api = ("--url", gateway.url, "--admin-key", ADMIN_KEY)
    code, out, _ = await report(capsys, "--since", "2026-11-01", "--format", "csv", *api)
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["id"] == ID and row["status"] == "escalated"
    code, out, _ = await anomalies(capsys, "feedback", ID, "real", *api)
    assert code == 0 and "feedback: real (" in out
    code, out, _ = await anomalies(capsys, "show", ID, "--json", *api)
    assert orjson.loads(out)["feedback"]["verdict"] == "real"
    code, _, err = await anomalies(capsys, "feedback", "nope", "real", *api)
    assert code == 1 and err == "spendgate anomalies: no anomaly 'nope'\n"
    code, _, err = await report(capsys, "--since", "yesterday", *api)
    assert code == 1 and "since must be like 7d, 24h" in err
