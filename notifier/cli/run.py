"""``notifier run`` (the main job) and ``notifier check-config``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any, TextIO

from notifier.cli.output import print_config_error
from notifier.cli.progress import TerminalProgress
from notifier.config import load_config, summarize
from notifier.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: str) -> str:
    """A usage error (exit 2) for an unknown level, as for any other bad option."""
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid level {value!r} (choose from {', '.join(LOG_LEVELS)}, any case)")
    return value.upper()


def add_parsers(sub: Any) -> None:
    """Add ``run`` and ``check-config`` to the top-level subparsers."""
    run = sub.add_parser("run", help="run the notifier until SIGTERM/SIGINT (the main job)")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    run.add_argument("--once", action="store_true",
                     help="check and drain every subscription once, then exit (backfills, cron)")
    run.add_argument("--log-format", choices=["auto", "text", "json"], default=None,
                     help="log format (default: from the config; auto = text on a TTY)")
    run.add_argument("--log-level", default=None, type=_log_level, metavar="LEVEL",
                     help=f"{', '.join(LOG_LEVELS)} (default: from the config)")

    check = sub.add_parser("check-config", help="validate a configuration file (exit 0 or 2)")
    check.add_argument("--config", required=True, metavar="FILE")


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run_main(args: argparse.Namespace) -> int:
    """``notifier run``: load the config, set up logging, hand over to App."""
    # Until App takes over the signals, a stop request during start-up (loading the
    # config, importing the sinks) ends the process cleanly: nothing has started yet.
    signal.signal(signal.SIGTERM, _exit_before_start)
    from notifier.app import App
    from notifier.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return 2
    setup_logging(args.log_level or config.logging.level,
                  args.log_format or config.logging.format)
    app = App(config)
    progress = TerminalProgress(sys.stderr) if args.once and sys.stderr.isatty() else None
    return asyncio.run(app.run(once=args.once, progress=progress))


def check_config_main(
    path: str | os.PathLike[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``notifier check-config``: 0 with a summary on stdout, or 2 with every problem on stderr."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print_config_error(exc, stderr or sys.stderr)
        return 2
    out = stdout or sys.stdout
    print(f"{path}: OK", file=out)
    for line in summarize(config):
        print(f"  {line}", file=out)
    return 0
