"""FOCUS files from elsewhere (a cloud's export, columns in its own order, teams in a tag) read
into spend events: mapping, classification, exact money, stable ids, and problems named by
file, line and column; `spendgate import` refusing what it cannot import, writing nothing."""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.analytics.taxonomy import ChargeClass
from gateway.history import cli as import_cli
from gateway.history.imports import problems
from gateway.history.sources import FocusMapping, SourceError, focus_events
from tests.clock import T0_MS
from tests.history.conftest import TARGET_DB
from tests.ledger import NOW, db_url

COLUMNS = (
    "ChargeCategory",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ProviderName",
    "ServiceName",
    "ServiceCategory",
    "ResourceName",
    "SubAccountName",
    "Tags",
)
# A cloud's export: its own column order, teams and projects in tags.
ROWS = (
    (
        "Usage",
        "12.3456789014",  # more digits than a nano: rounded
        "10.00",
        "15.00",
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
        "Microsoft",
        "Azure OpenAI",
        "AI and Machine Learning",
        "gpt-4o-eastus",
        "prod-subscription",
        '{"team": "alpha", "project": "search", "env": "prod"}',
    ),
    (
        "Tax",
        "1.20",
        "1.20",
        "",
        "2026-11-02T02:00:00+02:00",  # a local time: the same UTC day
        "2026-11-03T00:00:00Z",
        "Microsoft",
        "Azure OpenAI",
        "AI and Machine Learning",
        "",
        "prod-subscription",
        '{"team": "alpha"}',
    ),
    (
        "Usage",
        "3.00",
        "3.00",
        "3.00",
        "2026-11-03T00:00:00",  # no offset: UTC
        "2026-11-04T00:00:00Z",
        "Microsoft",
        "Virtual Machines",
        "Compute",
        "gpu-vm-1",
        "prod-subscription",
        '{"team": "beta", "owner": "ml"}',
    ),
)


def write(
    path: Path, rows: tuple[tuple[str, ...], ...] = ROWS, columns: tuple[str, ...] = COLUMNS
) -> Path:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(out.getvalue().encode()))
    else:
        path.write_text(out.getvalue())
    return path


TAGS = FocusMapping(team_tag="team", project_tag="project")
NOV_2_MS = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)


def test_a_cloud_export_maps_teams_and_projects_from_tags(tmp_path: Path) -> None:
    loaded = focus_events(write(tmp_path / "cloud.csv"), TAGS)
    usage, tax, vm = loaded.events
    assert (usage.team, usage.project, dict(usage.tags)) == ("alpha", "search", {"env": "prod"})
    assert (usage.kind, usage.cost_nano, usage.list_cost_nano) == (
        "import",
        12_345_678_901,
        15 * 10**9,
    )
    assert (usage.provider, usage.deployment, usage.units) == ("Microsoft", "gpt-4o-eastus", 0)
    assert usage.ts_ms == NOV_2_MS
    assert tax.kind == "external" and tax.cost_nano == 1_200_000_000
    assert tax.ts_ms == NOV_2_MS  # 02:00 at +02:00 is midnight UTC
    assert ChargeClass.from_json(tax.charge).category == "Tax"
    assert tax.project is None and dict(tax.tags) == {}
    # Usage of any service is usage (it feeds forecasts); its category stays on the row.
    assert (vm.team, vm.kind, dict(vm.tags)) == ("beta", "import", {"owner": "ml"})
    assert not loaded.skipped


def test_effective_cost_a_default_team_and_a_team_column(tmp_path: Path) -> None:
    path = write(tmp_path / "cloud.csv.gz")
    effective = focus_events(path, FocusMapping(team_tag="team", cost="effective"))
    assert effective.events[0].cost_nano == 10 * 10**9
    everyone = focus_events(path, FocusMapping(team="platform"))
    assert {e.team for e in everyone.events} == {"platform"}
    by_column = focus_events(path, FocusMapping(team_column="SubAccountName"))
    assert {e.team for e in by_column.events} == {"prod-subscription"}


def test_ids_follow_the_content_not_the_layout(tmp_path: Path) -> None:
    first = focus_events(write(tmp_path / "a.csv"), TAGS).events
    order = tuple(reversed(COLUMNS))
    rows = tuple(tuple(reversed(r)) for r in ROWS)
    reordered = focus_events(write(tmp_path / "b.csv", rows, order), TAGS).events
    assert [e.event_id for e in reordered] == [e.event_id for e in first]
    assert all(e.event_id.startswith("imp:") for e in first)
    twice = focus_events(write(tmp_path / "c.csv", (ROWS[0], ROWS[0])), TAGS).events
    assert twice[0].event_id == first[0].event_id
    assert twice[1].event_id == first[0].event_id + ".1"  # a second, identical charge


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({1: "12,5"}, ":2: BilledCost: not a number: '12,5'"),
        ({4: "yesterday"}, ":2: ChargePeriodStart: not an ISO 8601 date-time: 'yesterday'"),
        ({0: "Refund"}, ":2: ChargeCategory: 'Refund' is not one of"),
        ({11: '{"project": "search"}'}, ":2: no team: its team column or tag is empty"),
        ({11: "team=alpha"}, ":2: Tags: not a JSON object: 'team=alpha'"),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_column(
    tmp_path: Path, change: dict[int, str], message: str
) -> None:
    row = list(ROWS[0])
    for i, value in change.items():
        row[i] = value
    path = write(tmp_path / "bad.csv", (tuple(row), ROWS[1]))
    with pytest.raises(SourceError) as caught:
        focus_events(path, TAGS)
    assert str(caught.value).startswith(f"{path}{message}")


def test_missing_columns_and_a_missing_team_mapping_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "cloud.csv")
    with pytest.raises(SourceError, match="no team for its rows: name the column"):
        focus_events(path, FocusMapping())
    with pytest.raises(SourceError, match="no column 'Team'"):
        focus_events(path, FocusMapping(team_column="Team"))
    narrow = write(tmp_path / "narrow.csv", tuple(r[2:] for r in ROWS), COLUMNS[2:])
    with pytest.raises(SourceError) as caught:
        focus_events(narrow, TAGS)
    assert "no column 'ChargeCategory'" in str(caught.value)
    assert "no column 'BilledCost'" in str(caught.value)


def test_what_may_not_be_imported() -> None:
    from tests.ledger import event

    fine = event(1)
    future = event(2, ts_ms=T0_MS + 2 * 86_400_000)
    stranger = event(3, team="omega")
    found = problems([fine, future, stranger, event(4, team="omega")], {"alpha"}, T0_MS)
    assert found[0] == "event ev-2 of team alpha is dated in the future"
    assert found[1].startswith("team 'omega' is not in the config (2 events)")
    assert problems([fine], {"alpha"}, T0_MS) == []


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate import")
    import_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def test_the_cli_refuses_unknown_teams_and_bad_files_writing_nothing(
    target: Redis, real_redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"store: {{url: '{db_url(real_redis_url, TARGET_DB)}'}}\n"
        "providers: {mock: {kind: openai, base_url: 'http://127.0.0.1:9/v1', auth: none}}\n"
        "models: {gpt-4o: {deployments: [{provider: mock, model: gpt-4o}]}}\n"
        "teams: {alpha: {}}\n"
    )
    cloud = str(write(tmp_path / "cloud.csv"))
    code = await import_cli.run_async(
        parse(cloud, "--team-tag", "team", "--config", str(config)), NOW
    )
    err = capsys.readouterr().err
    assert code == 1 and "nothing imported" in err
    assert "team 'beta' is not in the config (1 events)" in err
    bad = write(tmp_path / "bad.csv", ((*ROWS[0][:1], "x", *ROWS[0][2:]),))
    code = await import_cli.run_async(
        parse(cloud, str(bad), "--team", "alpha", "--config", str(config)), NOW
    )
    err = capsys.readouterr().err
    assert code == 1 and f"{bad}:2: BilledCost: not a number: 'x'" in err
    code = await import_cli.run_async(
        parse(str(tmp_path / "none.csv"), "--config", str(config)), NOW
    )
    assert code == 1 and "no such file or directory" in capsys.readouterr().err
    assert not await target.exists(rediskeys.events_stream("alpha"))
    # Mapped to a configured team, it goes in.
    code = await import_cli.run_async(parse(cloud, "--team", "alpha", "--config", str(config)), NOW)
    assert code == 0 and capsys.readouterr().out.startswith("imported 3 events from 1 file(s)")
    assert await target.xlen(rediskeys.events_stream("alpha")) == 3
