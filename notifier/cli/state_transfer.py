"""``notifier state export`` / ``import``: the whole state as a SQLite state file, to move a
single process to cluster mode (import into the state topic) or to look at a cluster's state."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from notifier.cluster.transfer import export_state, import_state
from notifier.config import Config
from notifier.errors import NotifierError, StateLockedError
from notifier.state.lock import StateLock


def transfer_main(config: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """0 done, 1 failure, 2 bad input (an existing --out, a missing --in)."""
    try:
        if args.state_command == "export":
            return _export(config, args.out, out, err)
        return _import(config, args.source, args.force, out, err)
    except StateLockedError as exc:
        print(f"notifier state: {exc}", file=err)
        return 2
    except (NotifierError, sqlite3.Error, OSError) as exc:
        print(f"notifier state: {exc}", file=err)
        return 1


def _export(config: Config, target: Path, out: TextIO, err: TextIO) -> int:
    if target.exists():
        print(f"notifier state: {target} exists: export writes a new file", file=err)
        return 2
    if config.cluster is not None:
        n = asyncio.run(export_state(config, target))
        print(f"exported {n} state record(s) of {config.cluster.state_topic} to {target}",
              file=out)
        return 0
    source = Path(config.state.path)
    if not source.exists():
        print(f"notifier state: no state file at {source}", file=err)
        return 2
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # consistent even while a notifier writes (WAL)
    finally:
        dst.close()
        src.close()
    target.chmod(0o600)  # it holds refresh tokens
    print(f"exported {source} to {target}", file=out)
    return 0


def _import(config: Config, source: Path, force: bool, out: TextIO, err: TextIO) -> int:
    if not source.exists():
        print(f"notifier state: no state file at {source}", file=err)
        return 2
    if config.cluster is not None:
        n = asyncio.run(import_state(config, source, force=force,
                                     progress=_progress(err, time.monotonic)))
        print(f"imported {n} record(s) from {source} into {config.cluster.state_topic}; "
              "replicas restore them when they (re)take their partitions", file=out)
        return 0
    target = Path(config.state.path)
    if target.exists():
        print(f"notifier state: {target} exists: import only creates the state file "
              "(remove it first to replace it)", file=err)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    with StateLock(target):
        shutil.copyfile(source, target)
        target.chmod(0o600)
    print(f"imported {source} as {target}", file=out)
    return 0



def _progress(err: TextIO, clock: Callable[[], float],
              every: float = 5.0) -> Callable[[int], None]:
    """Tell ``err`` how many rows an import has sent, at most once per ``every`` seconds."""
    last = clock()

    def report(sent: int) -> None:
        nonlocal last
        if clock() - last >= every:
            last = clock()
            print(f"notifier state: {sent} record(s) sent so far", file=err, flush=True)

    return report
