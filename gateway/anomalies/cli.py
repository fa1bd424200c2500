"""`spendgate anomalies show|feedback`: one anomaly in full, and a person's verdict on it.

(`spendgate report anomalies` lists them.) As `spendgate budgets`: with the local store or a
Redis the command uses the store itself; with an in-process one (memory://), or whenever --url
is given, it goes through a running gateway's admin API (`gateway.clikit`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from gateway.analytics.anomaly import VERDICTS
from gateway.clikit import (
    CliError,
    SharedStore,
    admin_parent,
    connect,
    print_json,
    run_command,
)

_HTTP_TIMEOUT_S = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = admin_parent()
    sub = parser.add_subparsers(dest="anomalies_command", required=True, metavar="{show,feedback}")
    show = sub.add_parser("show", parents=[common], help="one anomaly, its numbers and causes")
    show.add_argument("id", metavar="ID", help="the anomaly's id (`spendgate report anomalies`)")
    feedback = sub.add_parser(
        "feedback",
        parents=[common],
        help="say whether an anomaly was expected (seasonal or planned: no more alerts about "
        "it, and the same pattern is suppressed) or real",
    )
    feedback.add_argument("id", metavar="ID", help="the anomaly's id")
    feedback.add_argument("verdict", choices=VERDICTS, help="expected or real")
    feedback.add_argument("--note", default="", help="why, for whoever reads it next")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """`clock` dates the feedback when the command writes the store itself."""
    return await run_command("anomalies", _run(args, clock))


async def _run(args: argparse.Namespace, clock: Callable[[], float]) -> int:
    feedback = args.anomalies_command == "feedback"
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            view = await _from_store(target, args, feedback, clock)
        else:
            path = f"/admin/anomalies/{quote(args.id, safe='')}"
            if feedback:
                body = {"verdict": args.verdict, "note": args.note}
                status, view = await target.call(
                    "POST", path + "/feedback", body=body, answers=frozenset({"anomaly_not_found"})
                )
            else:
                status, view = await target.call(
                    "GET", path, answers=frozenset({"anomaly_not_found"})
                )
            if status == 404:
                raise CliError(f"no anomaly {args.id!r}")
    if args.as_json:
        print_json(view)
    else:
        print(describe(view))
    return 0


async def _from_store(
    target: SharedStore, args: argparse.Namespace, feedback: bool, clock: Callable[[], float]
) -> dict[str, Any]:
    from gateway.analytics.anomaly import Feedback, public_view
    from gateway.anomalies.records import AnomalyStore
    from gateway.store.connect import connected

    async with connected(target.config.store) as redis:
        store = AnomalyStore(redis)
        if feedback:
            found = await store.set_feedback(args.id, Feedback(args.verdict, args.note, clock()))
        else:
            found = await store.get(args.id)
    if found is None:
        raise CliError(f"no anomaly {args.id!r}")
    return public_view(found.anomaly, found.feedback)


def describe(view: Mapping[str, Any]) -> str:
    """An anomaly for a terminal: what, when, how much, why, and what people said."""
    scope = "" if view["scope"] == "team" else f", {view['scope']}"
    until = f" .. {view['resolved_at']}" if view["resolved_at"] else " .. (open)"
    low, high = view["band_usd"]
    lines = [
        f"{view['id']}: {view['kind']} in team {view['team']}{scope}",
        f"  {view['status']}, severity {view['severity']}; {view['start']}{until}; "
        f"{view['buckets']} bucket(s) of {view['bucket_s']} s",
        f"  spent {view['actual_usd']} USD, expected {view['expected_usd']} (band {low} .. "
        f"{high}): {view['excess_usd']} over, z {view['z']}",
        "  causes:" if view["causes"] else "  causes: none found",
    ]
    for rank, cause in enumerate(view["causes"], 1):
        name = cause["kind"] + (f" {cause['value']}" if cause["value"] else "")
        lines.append(
            f"    {rank}. {name}: {cause['excess_usd']} USD ({cause['share']:.0%}; "
            f"{cause['detail']})"
        )
    if view["suppressed_by"]:
        lines.append(f"  suppressed: {view['suppressed_by']} was marked expected")
    given = view["feedback"]
    if given:
        note = f": {given['note']}" if given["note"] else ""
        lines.append(f"  feedback: {given['verdict']} ({given['at']}){note}")
    return "\n".join(lines)
