"""A FOCUS export imported into an empty store gives back the same reports: realistic traffic
through one gateway (`focus_traffic`: cache hits, tiering, a cascade, a downgrade, a shared team,
shared costs, external costs of every charge category), its month exported as FOCUS, imported
with `spendgate import` into a second gateway with an empty embedded store (through its admin
API), and that gateway's FOCUS export, chargeback and showback compared to the first's."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.history import cli as import_cli
from tests.conftest import ADMIN_KEY, Gateway, GatewayFactory
from tests.reports.focus_traffic import Export, realistic_export

# Showback's money. Not list_cost_usd: where a request cost more than its requested model's
# list price (a cascade's escalation), its list cost is below its cost, and FOCUS (whose
# x_SavingsCost is never negative) cannot say by how much: it comes back as the cost.
MONEY = ("cost_usd", "external_usd", "savings_usd")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spendgate import")
    import_cli.add_arguments(parser)
    return parser.parse_args(argv)


async def admin(gw: Gateway, kind: str, **params: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gw.url}/admin/reports/{kind}",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return await (r.text() if params.get("format") == "csv" else r.json())


async def rolled_up(gw: Gateway, total_cost: str) -> dict[str, Any]:
    """The second gateway's showback, once its aggregator has rolled up the whole import."""
    async with asyncio.timeout(20):
        while True:
            showback = await admin(gw, "showback")
            if showback["total"]["cost_usd"] == total_cost:
                return showback  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


def rows(text: str) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple(sorted(r.items())) for r in csv.DictReader(io.StringIO(text)))


async def test_a_focus_export_round_trips_to_the_nano(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first: Export = await realistic_export(gateway_factory)
    path = tmp_path / f"focus-{first.month}.csv"
    path.write_text(first.focus_csv)
    second = await gateway_factory("focus.yaml", teams=())
    target = ("--url", second.url, "--admin-key", ADMIN_KEY)

    code = await import_cli.run_async(parse(str(path), "--dry-run", *target))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("would import ") and "(dry run: nothing written)" in out
    assert "skipped" in out and "allocation rows" in out
    assert (await admin(second, "showback"))["total"]["cost_usd"] == "0.000000000"

    code = await import_cli.run_async(parse(str(path), *target))
    out, err = capsys.readouterr()
    assert code == 0, err
    showback = await rolled_up(second, first.showback["total"]["cost_usd"])
    again = await import_cli.run_async(parse(str(path), *target))
    assert again == 0 and "imported 0 events" in capsys.readouterr().out

    # The FOCUS export: the same rows, every cost to the nano, every column.
    export = await admin(second, "focus", period=first.month, format="csv")
    assert rows(export) == rows(first.focus_csv)
    # Chargeback: every statement's money (requests are not in FOCUS: they are not compared).
    chargeback = await admin(second, "chargeback", period=first.month)

    def statements(doc: dict[str, Any]) -> dict[str, Any]:
        usd = [{k: v for k, v in s.items() if k.endswith("_usd")} for s in doc["statements"]]
        return {s["team"]: money for s, money in zip(doc["statements"], usd, strict=True)}

    assert statements(chargeback) == statements(first.chargeback)
    assert chargeback["total_usd"] == first.chargeback["total_usd"]

    # Showback: cost, external costs, list cost and savings per team and in total.
    def money(doc: dict[str, Any]) -> dict[str, Any]:
        teams = {t["team"]: {k: t[k] for k in MONEY} for t in doc["teams"]}
        return {**teams, "*": {k: doc["total"][k] for k in MONEY}}

    assert money(showback) == money(first.showback)
    assert showback["total"]["cache_hits"] == first.showback["total"]["cache_hits"]
    listed, was = (float(d["total"]["list_cost_usd"]) for d in (showback, first.showback))
    assert 0 <= listed - was < 0.00001
