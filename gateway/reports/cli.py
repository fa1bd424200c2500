"""`spendgate report showback|chargeback|focus|forecast|anomalies|scorecard|recommendations|
tagging`: FinOps reports from a shell.

As `spendgate keys`: with the local store or a Redis the command reads the rollups itself; an
in-process store (memory://) lives inside the running gateway, so then, or whenever --url is
given, the report comes from that gateway's admin API (rendered there, in the same format).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.clikit import CliError, SharedStore, add_admin_arguments, connect, run_command
from gateway.reports.kinds import DAY_RANGES, KINDS

if TYPE_CHECKING:  # `spendgate --help` builds the parser: the report stack loads when one runs
    from redis.asyncio import Redis

    from gateway.config.model import Config
    from gateway.reports.build import Period, Report

_HTTP_TIMEOUT_S = 120.0  # a year of FOCUS rows takes a while to build
_FORMATS = ("table", "csv", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="which report")
    parser.add_argument(
        "--period", metavar="YYYY-MM", help="a calendar month (UTC); default: the current one"
    )
    parser.add_argument(
        "--week",
        nargs="?",
        const="last",
        metavar="YYYY-Www",
        help="review: the ISO week (default, or --week alone: the last complete one)",
    )
    parser.add_argument(
        "--start", metavar="YYYY-MM-DD", help="showback, tagging, recommendations: first day (UTC)"
    )
    parser.add_argument(
        "--end",
        metavar="YYYY-MM-DD",
        help="showback, tagging, recommendations: last day, inclusive",
    )
    parser.add_argument(
        "--team", metavar="TEAM", help="forecast, anomalies, recommendations: only this team"
    )
    parser.add_argument(
        "--days",
        type=int,
        default=30,
        metavar="N",
        help="forecast: daily forecasts for the next N days (default: 30)",
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="anomalies: those that started since WHEN (7d, 24h, 2026-11-01 or "
        "2026-11-01T09:00, UTC), and those still open (default: 7d)",
    )
    parser.add_argument(
        "--format", choices=_FORMATS, help="output format (default: table; focus: csv)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    add_admin_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(run_async(args))


async def run_async(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """`clock`: the wall clock a forecast read straight from the store is made at (tests fix
    it; through the admin API the gateway's clock decides)."""
    return await run_command("report", _run(args, clock))


async def _run(args: argparse.Namespace, clock: Callable[[], float]) -> int:
    fmt = args.format or ("csv" if args.kind == "focus" else "table")
    if args.week and args.kind != "review":
        raise CliError("--week selects a review's week: use it with `report review`")
    if args.since and args.kind != "anomalies":
        raise CliError("--since selects anomalies: use it with `report anomalies`")
    if args.kind == "forecast":
        if args.period or args.start or args.end:
            raise CliError("a forecast looks ahead from now: use --days N (and --team T)")
        text, label = await _forecast_text(args, fmt, clock()), f"the next {args.days} days"
    elif args.kind == "anomalies":
        if args.period or args.start or args.end:
            raise CliError("anomalies are selected with --since (and --team)")
        text, label = await _anomalies_text(args, fmt, clock()), "anomalies"
    elif args.kind == "review":
        if args.team or args.start or args.end or args.period:
            raise CliError("a review covers every team for one week: use --week [YYYY-Www]")
        text, label = await _review_text(args, fmt, clock())
    elif args.kind == "maturity":
        if args.team or args.start or args.end or args.period:
            raise CliError("maturity is assessed on the last 30 days, for every team: no options")
        text, label = await _maturity_text(args, fmt, clock()), "maturity"
    elif args.kind == "scorecard":
        if args.team or args.start or args.end:
            raise CliError("a scorecard covers every team for one month: use --period YYYY-MM")
        text, label = await _scorecard_text(args, fmt, clock())
    elif args.kind == "recommendations":
        text, label = await _recommendations_text(args, fmt, clock())
    else:
        if args.team:
            raise CliError(
                f"--team is for forecasts, anomalies and recommendations: {args.kind} covers "
                "every team"
            )
        try:
            period = _period(args, clock())
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        text, label = await _report_text(args, period, fmt), period.label
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, text)
        print(f"wrote {args.kind} {label} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _period(args: argparse.Namespace, now_s: float) -> Period:
    from gateway.reports.build import Period

    if args.start or args.end:
        if args.kind not in DAY_RANGES:
            raise CliError(f"{args.kind} covers one month: use --period YYYY-MM")
        if args.period:
            raise CliError("give --period or --start/--end, not both")
        if not (args.start and args.end):
            raise CliError("give both --start and --end")
        return Period.of_days(args.start, args.end)
    if args.period:
        return Period.of_month(args.period)
    now = datetime.fromtimestamp(now_s, UTC)
    if args.kind in DAY_RANGES:
        return Period.month_to_date(now)
    return Period.current_month(now)


async def _report_text(args: argparse.Namespace, period: Period, fmt: str) -> str:
    from gateway.reports.build import build_report
    from gateway.reports.render import render

    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.store.connect import connected

            async with connected(target.config.store) as redis:
                report = await build_report(args.kind, target.config, redis, period)
            return render(report, fmt)  # type: ignore[arg-type]  # argparse checked choices
        params = {"format": fmt}
        if args.kind in DAY_RANGES:
            params.update(start=period.start.isoformat(), end=period.end.isoformat())
        else:
            params["period"] = period.label
        return await target.text(f"/admin/reports/{args.kind}", params)


async def _forecast_text(args: argparse.Namespace, fmt: str, now: float) -> str:
    from gateway.reports.render import render

    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.analytics.outlook import Forecaster
            from gateway.budgets.ledger import BudgetLedger
            from gateway.budgets.registry import BudgetRegistry
            from gateway.reports.forecast import UnknownTeam, forecast_report
            from gateway.store.connect import connected

            config = target.config
            async with connected(config.store) as redis:
                try:
                    report = await forecast_report(
                        config,
                        redis,
                        BudgetRegistry(redis, config.budgets.rules),
                        BudgetLedger(redis, clock=lambda: now),
                        Forecaster(),
                        now,
                        team=args.team,
                        days=args.days,
                    )
                except (UnknownTeam, ValueError) as exc:
                    raise CliError(str(exc)) from exc
            return render(report, fmt)  # type: ignore[arg-type]  # argparse checked choices
        params = {"format": fmt, "days": str(args.days)}
        if args.team:
            params["team"] = args.team
        return await target.text("/admin/forecast", params)


async def _anomalies_text(args: argparse.Namespace, fmt: str, now: float) -> str:
    from gateway.reports.anomalies import DEFAULT_SINCE, anomalies_report, parse_since
    from gateway.reports.render import render

    when = args.since or DEFAULT_SINCE
    try:
        since = parse_since(when, datetime.fromtimestamp(now, UTC))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.store.connect import connected

            async with connected(target.config.store) as redis:
                report = await anomalies_report(redis, since, args.team)
            return render(report, fmt)  # type: ignore[arg-type]  # argparse checked choices
        params = {"format": fmt, "since": when}
        if args.team:
            params["team"] = args.team
        return await target.text("/admin/anomalies", params)


async def _scorecard_text(args: argparse.Namespace, fmt: str, now: float) -> tuple[str, str]:
    try:
        period = _period(args, now)
    except ValueError as exc:
        raise CliError(str(exc)) from exc

    async def build(config: Config, redis: Redis) -> Report:
        from gateway.analytics.outlook import Forecaster
        from gateway.budgets.ledger import BudgetLedger
        from gateway.budgets.registry import BudgetRegistry
        from gateway.reports.scorecard import scorecard_report

        registry = BudgetRegistry(redis, config.budgets.rules)
        ledger = BudgetLedger(redis, clock=lambda: now)
        return await scorecard_report(config, redis, registry, ledger, Forecaster(), period, now)

    text = await _from_store_or_api(
        args, fmt, build, "/admin/reports/scorecard", {"period": period.label}
    )
    return text, period.label


async def _review_text(args: argparse.Namespace, fmt: str, now: float) -> tuple[str, str]:
    week = None if args.week in (None, "last") else args.week

    async def build(config: Config, redis: Redis) -> Report:
        from gateway.budgets.registry import BudgetRegistry
        from gateway.reports.review import review_report

        registry = BudgetRegistry(redis, config.budgets.rules)
        return await review_report(config, redis, registry, week, now)

    params = {} if week is None else {"week": week}
    text = await _from_store_or_api(args, fmt, build, "/admin/reports/review", params)
    return text, f"week {week or 'last'}"


async def _maturity_text(args: argparse.Namespace, fmt: str, now: float) -> str:
    async def build(config: Config, redis: Redis) -> Report:
        from gateway.analytics.outlook import Forecaster
        from gateway.budgets.registry import BudgetRegistry
        from gateway.reports.maturity import maturity_report

        registry = BudgetRegistry(redis, config.budgets.rules)
        return await maturity_report(config, redis, registry, Forecaster(), now)

    return await _from_store_or_api(args, fmt, build, "/admin/reports/maturity", {})


async def _recommendations_text(args: argparse.Namespace, fmt: str, now: float) -> tuple[str, str]:
    period = _recommendations_period(args, now)

    async def build(config: Config, redis: Redis) -> Report:
        from gateway.budgets.registry import BudgetRegistry
        from gateway.reports.recommendations import recommendations_report
        from gateway.store.keys import Keyring

        registry = BudgetRegistry(redis, config.budgets.rules)
        await registry.refresh()
        keys = await Keyring(redis, config.keys).list()
        return await recommendations_report(
            config, redis, period, registry.all(), keys, team=args.team
        )

    params = {"team": args.team} if args.team else {}
    if period.month is not None:
        params["period"] = period.month
    else:
        params.update(start=period.start.isoformat(), end=period.end.isoformat())
    text = await _from_store_or_api(args, fmt, build, "/admin/reports/recommendations", params)
    return text, period.label


def _recommendations_period(args: argparse.Namespace, now_s: float) -> Period:
    """--period YYYY-MM, or --start and --end, or the last 30 days."""
    from gateway.reports.build import Period
    from gateway.reports.recommendations import default_period

    try:
        if args.period and (args.start or args.end):
            raise CliError("give --period or --start/--end, not both")
        if args.start or args.end:
            if not (args.start and args.end):
                raise CliError("give both --start and --end")
            return Period.of_days(args.start, args.end)
        if args.period:
            return Period.of_month(args.period)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return default_period(datetime.fromtimestamp(now_s, UTC))


async def _from_store_or_api(
    args: argparse.Namespace,
    fmt: str,
    build: Callable[[Config, Redis], Awaitable[Report]],
    path: str,
    params: Mapping[str, str],
) -> str:
    """The report built from the store itself, or asked of the gateway's admin API."""
    from gateway.reports.render import render

    async with connect(args, timeout_s=_HTTP_TIMEOUT_S) as target:
        if isinstance(target, SharedStore):
            from gateway.store.connect import connected

            async with connected(target.config.store) as redis:
                try:
                    report = await build(target.config, redis)
                except ValueError as exc:
                    raise CliError(str(exc)) from exc
            return render(report, fmt)  # type: ignore[arg-type]  # argparse checked choices
        return await target.text(path, {"format": fmt, **params})
