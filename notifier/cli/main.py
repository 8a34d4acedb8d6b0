"""Argument parsing and dispatch: every command group adds its parser and runs its command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from notifier import __version__
from notifier.cli import auth, discover, run, state, status, webhooks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Poll Autodesk's Relationship Service and publish every relationship "
        "created or deleted as a CloudEvent (Kafka, webhooks, jsonl, stdout).",
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parsers(sub)
    status.add_parser(sub)
    discover.add_parser(sub)
    # The simulator parses its own arguments (main below) and is imported only when used.
    sub.add_parser("simulate", help="serve a local Relationship Service (see --help)",
                   add_help=False).add_argument("args", nargs=argparse.REMAINDER)
    state.add_parser(sub)
    webhooks.add_parser(sub)
    auth.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from notifier.cli import simulate

        return simulate.main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "run":
        return run.run_main(args)
    if args.command == "check-config":
        return run.check_config_main(args.config)
    if args.command == "status":
        return status.status_main(args.config, as_json=args.json)
    if args.command == "state":
        return state.state_main(args)
    if args.command == "discover":
        return discover.discover_main(args.config, subscription=args.subscription,
                                      as_json=args.json)
    if args.command == "webhooks":
        return webhooks.webhooks_main(args)
    if args.command == "auth":
        return auth.auth_main(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
