"""Command-line parsing only: every command hands over to App or a small function."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from notifier import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Poll Autodesk's Relationship Service and publish every relationship "
        "created or deleted as a CloudEvent (Kafka, webhooks, jsonl, stdout).",
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the notifier until SIGTERM/SIGINT (the main job)")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    run.add_argument("--once", action="store_true",
                     help="check and drain every subscription once, then exit (backfills, cron)")
    run.add_argument("--log-format", choices=["auto", "text", "json"], default=None,
                     help="log format (default: from the config; auto = text on a TTY)")
    run.add_argument("--log-level", default=None, help="log level (default: from the config)")

    check = sub.add_parser("check-config", help="validate a configuration file (exit 0 or 2)")
    check.add_argument("--config", required=True, metavar="FILE")

    status = sub.add_parser("status", help="per subscription: last check, token age, quarantine")
    status.add_argument("--config", required=True, metavar="FILE")
    status.add_argument("--json", action="store_true", help="one JSON object per stream")

    disc = sub.add_parser("discover", help="list what each hub subscription would watch now")
    disc.add_argument("--config", required=True, metavar="FILE")
    disc.add_argument("--subscription", metavar="NAME", help="only this hub subscription")
    disc.add_argument("--json", action="store_true", help="one JSON object per project")

    sim = sub.add_parser("simulate", help="serve a local Relationship Service (see --help)",
                         add_help=False)
    sim.add_argument("args", nargs=argparse.REMAINDER)

    from notifier.state.admin import add_state_parser

    add_state_parser(sub)

    try:
        from notifier.sinks.webhook_admin import add_webhooks_parser
    except ImportError:  # pragma: no cover - the webhook sink is optional at import time
        pass
    else:
        add_webhooks_parser(sub)
    return parser


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from notifier.simulator.cli import main as simulate_main

        return simulate_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)

    if args.command == "check-config":
        from notifier.config import check_config_main

        return check_config_main(args.config)

    if args.command == "status":
        from notifier.status import status_main

        return status_main(args.config, as_json=args.json)

    if args.command == "state":
        from notifier.state.admin import state_main

        return state_main(args)

    if args.command == "discover":
        from notifier.discover_cmd import discover_main

        return discover_main(args.config, subscription=args.subscription, as_json=args.json)

    if args.command == "webhooks":
        from notifier.sinks.webhook_admin import webhooks_main

        return webhooks_main(args)

    if args.command == "run":
        # Until App takes over the signals, a stop request during start-up (loading the
        # config, importing the sinks) ends the process cleanly: nothing has started yet.
        signal.signal(signal.SIGTERM, _exit_before_start)
        from notifier.app import App
        from notifier.config import load_config, print_config_error
        from notifier.errors import ConfigError
        from notifier.logs import setup_logging

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print_config_error(exc, sys.stderr)
            return 2
        setup_logging(args.log_level or config.logging.level,
                      args.log_format or config.logging.format)
        app = App(config)
        return asyncio.run(app.run(once=args.once, progress=args.once and sys.stderr.isatty()))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
