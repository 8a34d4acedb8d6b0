"""``notifier state``: drop or rename a subscription's stored sync state.

    notifier state --config FILE forget SUBSCRIPTION
    notifier state --config FILE rename OLD NEW
    notifier state --config FILE export --out FILE
    notifier state --config FILE import --in FILE [--force]

``export`` writes the whole state (the SQLite file's, or in cluster mode the state topic's) to a
new SQLite state file; ``import`` puts such a file's state in place: in cluster mode into the
state topic (how a single process moves to cluster mode), otherwise as the state file when
there is none yet.

A subscription missing from the configuration keeps its state (token, known ids) for
``state.orphan_retention``, so that a rename or a briefly incomplete config does not replay its
snapshot and lose the deletions in between. ``rename`` carries the state over to the new name
(do it before starting the notifier with the renamed subscription); ``forget`` drops it now (a
subscription configured again later starts with a fresh bootstrap). Run them while the notifier
is stopped: they change the state file only, and refuse (exit 2, naming the holder) while a
``notifier run`` holds the state file's lock.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from notifier.config import Config, load_config
from notifier.errors import ConfigError, StateError, StateLockedError
from notifier.state.lock import StateLock
from notifier.state.sqlite import SqliteStateStore

_DESCRIPTION = """\
Drop or rename a subscription's stored sync state (token, known relationship ids).

  notifier state --config FILE forget SUBSCRIPTION
  notifier state --config FILE rename OLD NEW
  notifier state --config FILE export --out FILE
  notifier state --config FILE import --in FILE [--force]

export/import move the whole state as a SQLite state file: from a single process into a
cluster's state topic (cluster mode) and back.
Orphaned subscriptions (missing from the config) keep their state for state.orphan_retention
(default 7d). Run these while the notifier is stopped.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="forget or rename a subscription's stored state",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    ops = p.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    forget = ops.add_parser("forget", help="drop every stream of SUBSCRIPTION now")
    forget.add_argument("subscription", metavar="SUBSCRIPTION")
    forget.add_argument("--force", action="store_true",
                        help="also when SUBSCRIPTION is configured (it bootstraps again)")
    rename = ops.add_parser("rename", help="carry OLD's state over to NEW")
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    export = ops.add_parser("export", help="write the whole state to a new SQLite file")
    export.add_argument("--out", required=True, type=Path, metavar="FILE")
    imp = ops.add_parser("import", help="take the state of a SQLite state file")
    imp.add_argument("--in", dest="source", required=True, type=Path, metavar="FILE")
    imp.add_argument("--force", action="store_true",
                     help="cluster mode: also when the state topic already holds state")


def state_main(args: argparse.Namespace, *, stdout: TextIO | None = None,
               stderr: TextIO | None = None) -> int:
    """Run a ``notifier state`` command: 0 done, 1 nothing to do or store failure, 2 bad input."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{args.config}: {line}", file=err)
        return 2
    if args.state_command in ("export", "import"):
        from notifier.cli.state_transfer import transfer_main  # Kafka only when needed

        return transfer_main(config, args, out, err)
    if config.cluster is not None:
        print(f"notifier state {args.state_command}: not available in cluster mode: the state "
              f"lives in the state topic {config.cluster.state_topic!r}, not in a replica's "
              "cache file. Stop the replicas, `notifier state export --out FILE`, run this "
              "command on FILE (a configuration without `cluster:` whose state.path is FILE), "
              "then `notifier state import --in FILE` into a new, empty state topic "
              "(see docs/cluster.md)", file=err)
        return 2
    path = Path(config.state.path)
    if not path.exists():
        print(f"notifier state: no state file at {path}", file=err)
        return 2
    configured = {s.name for s in config.subscriptions}
    try:
        if args.state_command == "forget":
            return _forget(config, args, configured, out, err)
        return _rename(config, args, configured, out, err)
    except StateLockedError as exc:  # the service is running: these change what it uses
        print(f"notifier state: {exc}", file=err)
        return 2
    except StateError as exc:
        print(f"notifier state: {exc}", file=err)
        return 1


def _forget(config: Config, args: argparse.Namespace, configured: set[str], out: TextIO,
            err: TextIO) -> int:
    name = args.subscription
    if name in configured and not args.force:
        print(f"notifier state: subscription {name!r} is configured: forgetting it makes it "
              "bootstrap again (a full snapshot); add --force to do it anyway", file=err)
        return 2
    n = asyncio.run(_run(config, lambda s: s.forget_subscription(name)))
    if not n:
        print(f"notifier state: no state for subscription {name!r}", file=err)
        return 1
    print(f"forgot subscription {name!r}: {n} stream(s)", file=out)
    return 0


def _rename(config: Config, args: argparse.Namespace, configured: set[str], out: TextIO,
            err: TextIO) -> int:
    old, new = args.old, args.new
    if old == new:
        print("notifier state: OLD and NEW are the same name", file=err)
        return 2
    n = asyncio.run(_run(config, lambda s: s.rename_subscription(old, new)))
    if not n:
        print(f"notifier state: no state for subscription {old!r}", file=err)
        return 1
    print(f"renamed subscription {old!r} to {new!r}: {n} stream(s)", file=out)
    if new not in configured:
        print(f"note: {new!r} is not in {args.config} yet; its state is kept for "
              "state.orphan_retention", file=out)
    return 0


async def _run(config: Config, op: Any) -> int:
    with StateLock(config.state.path):  # not while a notifier runs on the same file
        return await _apply(config, op)


async def _apply(config: Config, op: Any) -> int:
    async with SqliteStateStore(config.state.path) as store:
        result: int = await op(store)
        return result
