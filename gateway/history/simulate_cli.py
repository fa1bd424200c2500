"""`spendgate simulate --config proposed.yaml --period 2026-11`: what a past period would have
cost under a proposed routing / tier / price configuration, per team and model, before it is
rolled out. Reads the cold-tier archive (`aggregator.archive_dir` of the proposed config, or
--archive-dir); writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from gateway.clikit import CliError, add_config_argument, config_path, load_config, run_command
from gateway.clikit import table as text_table
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from gateway.history.simulate import Line, Simulation

_FORMATS = ("table", "json")
COLUMNS = (
    "team",
    "model",
    "requests",
    "current_usd",
    "proposed_usd",
    "difference_usd",
    "change_pct",
    "proposed_models",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--period", metavar="YYYY-MM", help="a calendar month (UTC); default: the previous one"
    )
    parser.add_argument("--start", metavar="YYYY-MM-DD", help="first day (UTC), with --end")
    parser.add_argument("--end", metavar="YYYY-MM-DD", help="last day, inclusive")
    parser.add_argument("--team", metavar="TEAM", help="only this team's requests")
    parser.add_argument(
        "--archive-dir",
        metavar="DIR",
        help="the archive to read (default: aggregator.archive_dir of the config)",
    )
    parser.add_argument("--format", choices=_FORMATS, default="table", help="default: table")
    parser.add_argument(
        "--json", action="store_const", const="json", dest="format", help="--format json"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """`clock`: today, for the default period (tests fix it)."""
    return await run_command("simulate", _run(args, clock()))


async def _run(args: argparse.Namespace, now: float) -> int:
    from gateway.history.simulate import Simulation, archived_events, simulate
    from gateway.history.sources import SourceError

    path = config_path(args.config)
    proposed = load_config(path)
    start, end, label = _period(args, now)
    archive = Path(args.archive_dir or proposed.aggregator.archive_dir)
    if not await asyncio.to_thread(archive.is_dir):
        raise CliError(f"no archive at {archive} (give --archive-dir DIR)")
    try:
        events, read, missing = await asyncio.to_thread(archived_events, archive, start, end)
    except SourceError as exc:
        raise CliError(str(exc)) from exc
    if not read:
        raise CliError(f"no archived spend for {label} in {archive}")
    if args.team:
        events = [e for e in events if e.team == args.team]
    result = Simulation(simulate(events, proposed), read, missing)
    if args.format == "json":
        text = orjson.dumps(_document(result, label, path), option=orjson.OPT_INDENT_2).decode()
    else:
        text = _table(result, label, path)
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, text + "\n")
        print(f"wrote simulate {label} to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _period(args: argparse.Namespace, now: float) -> tuple[date, date, str]:
    if args.period and (args.start or args.end):
        raise CliError("give --period or --start/--end, not both")
    try:
        if args.start or args.end:
            if not (args.start and args.end):
                raise CliError("give both --start and --end")
            start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
            if end < start:
                raise CliError(f"--end {end} is before --start {start}")
            return start, end, f"{start}..{end}"
        if args.period:
            first = datetime.strptime(args.period, "%Y-%m").date()
        else:
            first = datetime.fromtimestamp(now, UTC).date().replace(day=1) - timedelta(days=1)
            first = first.replace(day=1)
    except ValueError as exc:
        raise CliError(f"a period is YYYY-MM and a day YYYY-MM-DD: {exc}") from None
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, following - timedelta(days=1), first.strftime("%Y-%m")


def _pct(line_current: int, difference: int) -> str:
    if not line_current:
        return ""
    return f"{Decimal(difference * 100) / Decimal(line_current):+.1f}"


def _served(line: Line) -> str:
    return ",".join(f"{m}:{n}" for m, n in sorted(line.served.items(), key=lambda x: (-x[1], x[0])))


def _row(line: Line) -> tuple[str, ...]:
    return (
        line.team,
        line.model,
        str(line.requests),
        nano_to_usd_str(line.current_nano),
        nano_to_usd_str(line.proposed_nano),
        nano_to_usd_str(line.difference_nano),
        _pct(line.current_nano, line.difference_nano),
        _served(line),
    )


def _table(result: Simulation, label: str, path: Path) -> str:
    rows = [_row(line) for line in result.lines]
    current, proposed = result.current_nano, result.proposed_nano
    rows.append(
        (
            "*",
            "*",
            str(sum(line.requests for line in result.lines)),
            nano_to_usd_str(current),
            nano_to_usd_str(proposed),
            nano_to_usd_str(proposed - current),
            _pct(current, proposed - current),
            "",
        )
    )
    lines = [f"simulate {label} under {path} (USD)", text_table(COLUMNS, rows, empty="(no data)")]
    kept = sum(line.kept for line in result.lines)
    if kept:
        lines.append(
            f"{kept} events keep their recorded cost (cache hits, imported and external costs, "
            "models the proposed config does not serve)"
        )
    if result.days_missing:
        lines.append("days without archived spend: " + _days(result.days_missing))
    return "\n".join(lines)


def _document(result: Simulation, label: str, path: Path) -> dict[str, Any]:
    current, proposed = result.current_nano, result.proposed_nano
    return {
        "report": "simulate",
        "period": label,
        "config": str(path),
        "current_usd": nano_to_usd_str(current),
        "proposed_usd": nano_to_usd_str(proposed),
        "difference_usd": nano_to_usd_str(proposed - current),
        "days_read": len(result.days_read),
        "days_missing": [d.isoformat() for d in result.days_missing],
        "lines": [
            {
                "team": line.team,
                "model": line.model,
                "requests": line.requests,
                "current_usd": nano_to_usd_str(line.current_nano),
                "proposed_usd": nano_to_usd_str(line.proposed_nano),
                "difference_usd": nano_to_usd_str(line.difference_nano),
                "kept_events": line.kept,
                "proposed_models": line.served,
            }
            for line in result.lines
        ],
    }


def _days(days: list[date]) -> str:
    """Consecutive days as ranges: 2026-11-29..2026-11-30."""
    runs: list[list[date]] = []
    for day in days:
        if runs and (day - runs[-1][-1]).days == 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)
