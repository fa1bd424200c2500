"""Archive files imported into an empty store give back the same reports: five weeks of spend
(requests, cache hits, tagged and untagged, posted external costs) rolled up and archived in one
Redis database, imported with `spendgate import` straight into another, rolled up there; every
report (showback, chargeback, FOCUS) of both months is the same document, requests included.
Importing again adds nothing; a dry run writes nothing; what is older than the daily rollups
live is counted and left out."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.aggregator.archive import Archiver
from gateway.config.loader import load_config
from gateway.config.model import AggregatorConfig, Config
from gateway.history import cli as import_cli
from gateway.reports.build import Period, Report, build_report
from gateway.types import SpendEvent
from tests.clock import T0, T0_MS
from tests.history.conftest import TARGET_DB
from tests.ledger import NOW, db_url, drain, event, external_event, history, produce

CONFIG = """\
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
MONTHS = ("2026-10", "2026-11")
DAY_MS = 86_400_000


def spend() -> list[SpendEvent]:
    first = T0.date() - timedelta(days=35)
    events = history("alpha", first, T0.date(), 40.0, seed=1, tags={"cost_center": "cc-1"})
    events += history("beta", first, T0.date(), 15.0, seed=2, project="ranking")
    events += [
        event(900 + i, team="beta", cache="hit", cost_nano=0, list_cost_nano=2_000, ts_ms=t)
        for i, t in enumerate(range(T0_MS - 3 * DAY_MS, T0_MS, DAY_MS))
    ]
    events.append(external_event(950, 123_456_789_012, ts_ms=T0_MS - 9 * DAY_MS))
    events.append(external_event(951, -5_000_000_000, ts_ms=T0_MS - 2 * DAY_MS))  # a credit
    events.append(event(999, ts_ms=T0_MS - 401 * DAY_MS))  # older than any daily rollup lives
    return events


async def reports(redis: Redis, config: Config) -> list[Report]:
    out = []
    for month in MONTHS:
        for kind in ("showback", "chargeback", "focus"):
            out.append(await build_report(kind, config, redis, Period.of_month(month)))  # type: ignore[arg-type]
    return out


def totals(out: str) -> dict[str, dict[str, str]]:
    """The per-team table `spendgate import` prints, by team."""
    lines = out.splitlines()
    columns = lines[1].split()
    return {
        cells[0]: dict(zip(columns, cells, strict=False))
        for cells in (line.split() for line in lines[2:])
        if cells and len(cells) >= 6
    }


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate import")
    import_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def test_archives_round_trip_to_the_same_reports(
    source: Redis,
    target: Redis,
    real_redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive_dir = tmp_path / "archive"
    ids = await produce(source, spend())
    await drain(source)
    # Retention 0, "now" just after the last entry (stream ids are Redis's own clock).
    archiver = Archiver(
        source, AggregatorConfig(archive_dir=str(archive_dir), stream_retention_s=0)
    )
    last_ms = max(int(i.split("-")[0]) for i in ids)
    assert await archiver.archive_once(now=last_ms / 1000 + 1) == len(ids)
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(url=db_url(real_redis_url, TARGET_DB)))
    config = load_config(path)
    expected = await reports(source, config)

    alphas = len([e for e in spend() if e.team == "alpha"])
    betas = len([e for e in spend() if e.team == "beta"])
    dry = parse(str(archive_dir), "--dry-run", "--config", str(path))
    code = await import_cli.run_async(dry, NOW)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"would import {len(ids) - 1} events from ")
    assert "(dry run: nothing written)" in out
    assert not await target.exists(rediskeys.events_stream("alpha"))
    alpha = totals(out)["alpha"]
    assert (alpha["events"], alpha["new"], alpha["too_old"]) == (
        str(alphas),
        str(alphas - 1),
        "1",
    )

    code = await import_cli.run_async(parse(str(archive_dir), "--config", str(path)), NOW)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"imported {len(ids) - 1} events from ")
    await drain(target)
    got = await reports(target, config)
    assert [r.document for r in got] == [r.document for r in expected]
    assert [r.rows for r in got] == [r.rows for r in expected]

    code = await import_cli.run_async(parse(str(archive_dir), "--config", str(path)), NOW)
    out, _ = capsys.readouterr()
    assert code == 0 and out.startswith("imported 0 events")
    assert totals(out)["beta"]["already_imported"] == str(betas)
    await drain(target)
    assert [r.document for r in await reports(target, config)] == [r.document for r in expected]
