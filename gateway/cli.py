"""The `spendgate` command. Each subcommand imports what it needs when it runs, so `--help`
and light commands start fast and never load the server (or litellm) for nothing."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.clikit import add_config_argument, add_log_level_argument, config_path

if TYPE_CHECKING:
    from gateway.config.model import Config


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: asyncio's loop works, slower
        return
    uvloop.install()


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.app.server import create_app
    from gateway.config.loader import load_config
    from gateway.errors import ConfigError
    from gateway.listen import GATEWAY_PORT_OPTION, PortUnavailable, check_port, serve_app
    from gateway.logs import AccessWriter, configure_logging
    from gateway.store.server import StoreServerError

    path = str(config_path(args.config))
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    configure_logging(args.log_level, access_log=config.server.access_log)
    host = args.host or config.server.host
    port = args.port or config.server.port
    if args.worker is not None:
        return _serve_worker(args, config, path, host, port)
    if args.workers > 1:
        from gateway.app.workers import supervise

        return supervise(config, path, host, port, args.workers, args.log_level)
    _install_uvloop()

    def listening(bound: int) -> None:
        print(
            f"spendgate {__version__} serving on http://{host}:{bound} (config: {config.source})",
            file=sys.stderr,
            flush=True,
        )

    try:
        check_port(host, port)  # before the app starts anything
        app = create_app(config, path, access_writer=AccessWriter(), freeze_heap=True)
        asyncio.run(serve_app(app, host, port, on_listening=listening))
    except PortUnavailable as exc:
        print(f"spendgate serve: {exc.message(GATEWAY_PORT_OPTION)}", file=sys.stderr)
        return 1
    except StoreServerError as exc:
        print(f"spendgate serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_worker(
    args: argparse.Namespace, config: Config, path: str | None, host: str, port: int
) -> int:
    """One process of `serve --workers N`, started by its supervisor (gateway.app.workers)."""
    from gateway.app.server import WorkerSlot
    from gateway.app.workers import MULTIPROC_ENV, run_worker

    metrics_dir = os.environ.get(MULTIPROC_ENV)
    if not metrics_dir:
        print(f"--worker is for `serve --workers N` (no {MULTIPROC_ENV})", file=sys.stderr)
        return 2
    index, count = args.worker
    _install_uvloop()
    return run_worker(config, path, host, port, WorkerSlot(index, count), metrics_dir)


def _worker_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return count


def _worker_slot(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    return int(index), int(count)


def _check_config(args: argparse.Namespace) -> int:
    from gateway.config.loader import check_config_main

    return check_config_main(args.path, args.allow_missing_env)


def _keys(args: argparse.Namespace) -> int:
    from gateway.store.keys_cli import run

    return run(args)


def _budgets(args: argparse.Namespace) -> int:
    from gateway.budgets.cli import run

    return run(args)


def _approvals(args: argparse.Namespace) -> int:
    from gateway.policies.cli import run

    return run(args)


def _report(args: argparse.Namespace) -> int:
    from gateway.reports.cli import run

    return run(args)


def _import(args: argparse.Namespace) -> int:
    from gateway.history.cli import run

    return run(args)


def _simulate(args: argparse.Namespace) -> int:
    from gateway.history.simulate_cli import run

    return run(args)


def _anomalies(args: argparse.Namespace) -> int:
    from gateway.anomalies.cli import run

    return run(args)


def _aggregate(args: argparse.Namespace) -> int:
    from gateway.aggregator.cli import run

    _install_uvloop()
    return run(args)


def _mock_upstream(args: argparse.Namespace) -> int:
    from gateway.providers.mock import main

    return main(args.mock_args)


def _demo(args: argparse.Namespace) -> int:
    from gateway.app.demo import run_demo

    _install_uvloop()
    return run_demo(
        port=args.port,
        upstream_port=args.upstream_port,
        duration=args.duration,
        requests=args.requests,
    )


_DESCRIPTION = """\
spendgate is a cost-aware gateway for LLM APIs. Applications keep their OpenAI SDK and point
its base URL at spendgate (OPENAI_BASE_URL=http://HOST:8080/v1, with a key from `spendgate keys
create`); spendgate routes each request to a deployment, holds it against the team's budgets
before any money is spent, answers from its cache where it can, and records what every request
cost for showback, chargeback and FOCUS reports."""

_EPILOG = """\
start here:
  spendgate demo                                the offline demo: a mock upstream, the gateway
                                                and sample traffic (no Redis, no API keys)
  spendgate check-config config/gateway.yaml    check a config and explain every problem
  spendgate serve --config config/gateway.yaml  run the gateway (or set $SPENDGATE_CONFIG)

`spendgate COMMAND --help` explains a command; README.md and docs/ explain the rest."""

_SERVE_DESCRIPTION = """\
Run the gateway on the config file given by --config, else $SPENDGATE_CONFIG, else
./config/gateway.yaml, else the packaged offline default (which expects `spendgate
mock-upstream` on port 9911, or SPENDGATE_UPSTREAM_URL set to an OpenAI-compatible API). The
file is reloaded when it changes and on SIGHUP; a file with problems is refused and the running
config stays."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spendgate",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"spendgate {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway", description=_SERVE_DESCRIPTION)
    add_config_argument(serve)
    serve.add_argument(
        "--host", help="address to listen on (default: server.host in the config, 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, help="port to listen on (default: server.port in the config, 8080)"
    )
    add_log_level_argument(serve)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="gateway processes sharing the port (SO_REUSEPORT) under one supervisor, and "
        "the store (local:// or redis://; not memory://) (default: 1)",
    )
    # Set by the supervisor on the processes it starts: "index/count".
    serve.add_argument("--worker", type=_worker_slot, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="offline demo: mock upstream + gateway + sample traffic")
    demo.add_argument(
        "--port",
        type=int,
        help="the gateway's port (default: 8080, or a free port if 8080 is taken)",
    )
    demo.add_argument(
        "--upstream-port",
        type=int,
        help="the mock upstream's port (default: 9911, or a free port if 9911 is taken)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: serve until Ctrl-C)",
    )
    demo.add_argument(
        "--requests", type=int, default=60, help="sample requests to send (default: 60)"
    )
    demo.set_defaults(func=_demo)

    check = sub.add_parser("check-config", help="validate a routing YAML and explain problems")
    check.add_argument("path", metavar="PATH", help="the config file to check")
    check.add_argument(
        "--allow-missing-env",
        action="store_true",
        help="check a file whose ${VARS} are not all set here (e.g. in CI): each unset one "
        "stands for a valid value of its field, and they are listed",
    )
    check.set_defaults(func=_check_config)

    keys = sub.add_parser("keys", help="create, list and revoke virtual keys")
    from gateway.store.keys_cli import add_arguments

    add_arguments(keys)
    keys.set_defaults(func=_keys)

    budgets = sub.add_parser("budgets", help="list, set and delete budgets; see their usage")
    from gateway.budgets.cli import add_arguments as add_budgets_arguments

    add_budgets_arguments(budgets)
    budgets.set_defaults(func=_budgets)

    approvals = sub.add_parser(
        "approvals", help="list, approve and deny requests over a policy's approval limit"
    )
    from gateway.policies.cli import add_arguments as add_approvals_arguments

    add_approvals_arguments(approvals)
    approvals.set_defaults(func=_approvals)

    report = sub.add_parser(
        "report", help="showback, chargeback, FOCUS, forecast and anomaly reports"
    )
    from gateway.reports.cli import add_arguments as add_report_arguments

    add_report_arguments(report)
    report.set_defaults(func=_report)

    anomalies = sub.add_parser(
        "anomalies", help="one spend anomaly in full; feedback on it (expected or real)"
    )
    from gateway.anomalies.cli import add_arguments as add_anomalies_arguments

    add_anomalies_arguments(anomalies)
    anomalies.set_defaults(func=_anomalies)

    history = sub.add_parser(
        "import",
        help="load past spend into the ledger (archive files, FOCUS CSVs)",
        description="Load past spend into the ledger from spendgate's archive files and FOCUS "
        "1.x CSVs, each event at most once (importing a file again adds nothing). Imported "
        "spend feeds rollups, reports and forecasts like live spend.",
    )
    from gateway.history.cli import add_arguments as add_import_arguments

    add_import_arguments(history)
    history.set_defaults(func=_import)

    simulate = sub.add_parser(
        "simulate",
        help="what a past period would have cost under a proposed config",
        description="Re-price a past period's recorded requests (from the archive) under a "
        "proposed routing / tier / price configuration, and print the cost difference per "
        "team and model.",
    )
    from gateway.history.simulate_cli import add_arguments as add_simulate_arguments

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=_simulate)

    aggregate = sub.add_parser(
        "aggregate", help="run the spend aggregator (for a store shared in Redis)"
    )
    from gateway.aggregator.cli import add_arguments as add_aggregate_arguments

    add_aggregate_arguments(aggregate)
    aggregate.set_defaults(func=_aggregate)

    mock = sub.add_parser(
        "mock-upstream", help="run the OpenAI/Anthropic-compatible mock", add_help=False
    )
    mock.add_argument(
        "mock_args",
        nargs=argparse.REMAINDER,
        help="the mock's own options: see `spendgate mock-upstream --help`",
    )
    mock.set_defaults(func=_mock_upstream)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mock-upstream"]:
        # Its options are the mock's own (argparse's REMAINDER would swallow none of them).
        return _mock_upstream(argparse.Namespace(mock_args=argv[1:]))
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
