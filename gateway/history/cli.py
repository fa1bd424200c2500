"""`spendgate import`: past spend into the ledger, from spendgate's archive files and FOCUS CSVs.

Files are read here, completely, before anything is written: a file with a problem stops the
import with every problem named (file, line, column). With a store it can reach (local://,
redis://) the events go straight in; an in-process store (memory://) lives inside the running
gateway, so then (or with --url) they go through its admin API, checked there by a dry run of
every batch before the first is written.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.clikit import (
    AdminClient,
    CliError,
    SharedStore,
    add_admin_arguments,
    connect,
    run_command,
    table,
)

if TYPE_CHECKING:
    from gateway.history.imports import ImportSummary
    from gateway.history.sources import Loaded
    from gateway.types import SpendEvent

_FORMATS = ("auto", "archive", "focus")
_BATCH = 1_000  # events per admin API request
_HTTP_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="archive files (<team>/<YYYY-MM-DD>.jsonl.gz), FOCUS CSVs (.csv, .csv.gz), or "
        "directories holding them (an archive_dir, searched recursively)",
    )
    parser.add_argument(
        "--format",
        choices=_FORMATS,
        default="auto",
        help="what the files are (default: auto, from each file's name)",
    )
    parser.add_argument(
        "--team-column",
        metavar="COLUMN",
        help="FOCUS: the column naming each row's team "
        "(default: x_Team, in spendgate's own exports)",
    )
    parser.add_argument("--team-tag", metavar="KEY", help="FOCUS: the tag naming each row's team")
    parser.add_argument(
        "--team",
        metavar="TEAM",
        help="FOCUS: the team of every row (or, with --team-column/--team-tag, of rows that "
        "name none)",
    )
    parser.add_argument(
        "--project-column",
        metavar="COLUMN",
        help="FOCUS: the column naming each row's project (default: x_Project, if present)",
    )
    parser.add_argument("--project-tag", metavar="KEY", help="FOCUS: the tag naming the project")
    parser.add_argument(
        "--cost",
        choices=("billed", "effective"),
        default="billed",
        help="FOCUS: which cost to import: BilledCost (default) or EffectiveCost (amortized)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be imported, per team, and write nothing",
    )
    add_admin_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """`clock`: the wall clock events are checked against (none may be dated in the future,
    none older than the daily rollups live); tests fix it."""
    return await run_command("import", _run(args, clock))


async def _run(args: argparse.Namespace, clock: Callable[[], float]) -> int:
    files = _files([Path(p) for p in args.paths], args.format)
    loaded = await asyncio.to_thread(_load, files, args)
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            summary = await _into_store(target, loaded.events, clock(), args.dry_run)
        else:
            summary = await _through_api(target, loaded.events, args.dry_run)
    summary.skipped.update(loaded.skipped)
    print(_report(summary, len(files)))
    return 0


def _files(paths: Sequence[Path], fmt: str) -> list[tuple[Path, str]]:
    """(file, "archive" | "focus") for every file named or found in a directory named."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file())
            found += [(p, kind) for p in candidates if (kind := _kind(p, fmt))]
        elif path.is_file():
            kind = _kind(path, fmt)
            if kind is None:
                raise CliError(
                    f"{path}: not an archive (.jsonl.gz) or a FOCUS CSV (.csv, .csv.gz): "
                    "say which with --format"
                )
            found.append((path, kind))
        else:
            raise CliError(f"{path}: no such file or directory")
    if not found:
        raise CliError(f"no archive or FOCUS files in {', '.join(map(str, paths))}")
    return found


def _kind(path: Path, fmt: str) -> str | None:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith((".jsonl.gz", ".jsonl")):
        return "archive"
    if name.endswith((".csv", ".csv.gz")):
        return "focus"
    return None


def _load(files: Sequence[tuple[Path, str]], args: argparse.Namespace) -> Loaded:
    from gateway.history.sources import (
        FocusMapping,
        Loaded,
        SourceError,
        archive_events,
        focus_events,
    )

    mapping = FocusMapping(
        team_column=args.team_column,
        team_tag=args.team_tag,
        team=args.team,
        project_column=args.project_column,
        project_tag=args.project_tag,
        cost=args.cost,
    )
    total, problems = Loaded(), []
    for path, kind in files:
        try:
            part = archive_events(path) if kind == "archive" else focus_events(path, mapping)
        except SourceError as exc:
            problems += exc.problems
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        total.events += part.events
        for reason, count in part.skipped.items():
            total.skipped[reason] = total.skipped.get(reason, 0) + count
    if problems:
        raise CliError(str(SourceError(problems)))
    return total


async def _into_store(
    target: SharedStore, events: list[SpendEvent], now: float, dry_run: bool
) -> ImportSummary:
    from gateway.history.imports import import_events, problems
    from gateway.store.connect import connected

    found = problems(events, target.config.teams, int(now * 1000))
    if found:
        raise CliError("nothing imported:\n" + "\n".join(found[:20]))
    async with connected(target.config.store) as redis:
        return await import_events(redis, events, now, dry_run=dry_run)


async def _through_api(api: AdminClient, events: list[SpendEvent], dry_run: bool) -> ImportSummary:
    from gateway.history.imports import ImportSummary

    passes = (True,) if dry_run else (True, False)  # every batch checked before one is written
    summary = ImportSummary(dry_run)
    for dry in passes:
        summary = ImportSummary(dry)
        for i in range(0, len(events), _BATCH):
            batch = [e.to_fields() for e in events[i : i + _BATCH]]
            _, answer = await api.call(
                "POST", "/admin/import", body={"events": batch, "dry_run": dry}
            )
            summary.merge(ImportSummary.from_dict(answer))
    return summary


def _report(summary: ImportSummary, files: int) -> str:
    from gateway.types import nano_to_usd_str

    teams = summary.teams
    rows = [
        (
            name,
            str(t.events),
            str(t.new),
            str(t.duplicate),
            str(t.too_old),
            nano_to_usd_str(t.cost_nano),
            str(t.tokens),
            t.first_day or "",
            t.last_day or "",
        )
        for name, t in sorted(teams.items())
    ]
    new = sum(t.new for t in teams.values())
    rows.append(
        (
            "*",
            str(sum(t.events for t in teams.values())),
            str(new),
            str(sum(t.duplicate for t in teams.values())),
            str(sum(t.too_old for t in teams.values())),
            nano_to_usd_str(sum(t.cost_nano for t in teams.values())),
            str(sum(t.tokens for t in teams.values())),
            "",
            "",
        )
    )
    verb = "would import" if summary.dry_run else "imported"
    head = f"{verb} {new} events from {files} file(s)" + (
        " (dry run: nothing written)" if summary.dry_run else ""
    )
    columns = (
        "team",
        "events",
        "new",
        "already_imported",
        "too_old",
        "new_cost_usd",
        "new_tokens",
        "first_day",
        "last_day",
    )
    lines = [head, table(columns, rows, empty="(no events)")]
    lines += [f"skipped {count} {reason}" for reason, count in sorted(summary.skipped.items())]
    if any(t.too_old for t in teams.values()):
        lines.append("too_old: older than the daily rollups are kept (400 days); not imported")
    if new and not summary.dry_run:
        lines.append("the aggregator rolls them up within seconds, like live spend")
    return "\n".join(lines)
