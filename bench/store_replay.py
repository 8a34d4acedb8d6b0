"""The SQLite store's share of the Kafka pipeline, without the notifier around it.

Replays the store calls a drain makes for ``--batches`` checkpoints of ``--per`` created
relationships each, through ``SqliteStateStore`` on a fresh file (fsync'd, as in production):
per batch the known-subset lookup, the announcement of the created events (unless
``--no-announce``) and the checkpoint (known ids with their bodies; during a bootstrap also the
staging of the listed ids). Prints the CPU time of the store's worker thread per kind of call
(``time.thread_time`` around each one), the figure the pipeline benchmark cannot split.

    python bench/store_replay.py [--mode bootstrap|incremental] [--batches 100] [--per 1000]
                                 [--no-announce] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from common import machine, table

from notifier.core.diff import stored_body
from notifier.source.models import Relationship
from notifier.state.base import Announcement
from notifier.state.sqlite import SqliteStateStore

SUB, CONTAINER = "replay", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


class TimedStore(SqliteStateStore):
    """Adds up the worker thread's CPU time per kind of store call."""

    cpu: dict[str, float]

    def _run_sync(self, what: str, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return super()._run_sync(what, *args, **kwargs)
        finally:
            self.cpu[what] = self.cpu.get(what, 0.0) + time.thread_time() - started


def relationship(rng: random.Random) -> Relationship:
    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    rid = uid()
    raw = {"id": rid, "createdOn": "2026-01-01T00:00:00Z", "isDeleted": False,
           "entities": [{"domain": "autodesk-bim360-asset", "type": "asset", "id": uid(),
                         "createdOn": "2026-01-01T00:00:00Z"},
                        {"domain": "autodesk-bim360-issue", "type": "issue", "id": uid(),
                         "createdOn": "2026-01-01T00:00:00Z"}]}
    return Relationship(rid, raw["createdOn"], False, None, raw)


async def replay(mode: str, batches: int, per: int, announce: bool) -> dict[str, float]:
    rng = random.Random(4)
    resync = mode == "bootstrap"
    with tempfile.TemporaryDirectory(prefix="store-replay-") as tmp:
        async with TimedStore(Path(tmp) / "state.db") as store:
            store.cpu = {}
            if resync:
                await store.begin_resync(SUB, CONTAINER)
            else:
                await store.commit_page(SUB, CONTAINER, next_token="t0", resync_cursor=None,
                                        in_resync=False, add_ids=(), remove_ids=(),
                                        changed=False, now=1.0)
            store.cpu.clear()
            for b in range(batches):
                rels = [relationship(rng) for _ in range(per)]
                ids = [r.id for r in rels]
                await store.known_subset(SUB, CONTAINER, ids)
                if announce:
                    await store.mark_announced(SUB, CONTAINER, [
                        Announcement(r.id, r.created_on, orjson.dumps(r.raw), "fp")
                        for r in rels])
                await store.commit_page(
                    SUB, CONTAINER, next_token=None if resync else f"t{b + 1}",
                    resync_cursor=f"c{b}" if resync else None, in_resync=resync,
                    add_ids=ids, remove_ids=(), seen_ids=ids if resync else (),
                    bodies={r.id: stored_body(r) for r in rels}, filter_fingerprint="fp",
                    changed=True, now=2.0 + b)
            return dict(store.cpu)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["bootstrap", "incremental"], default="bootstrap")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--per", type=int, default=1_000, help="created relationships per batch")
    p.add_argument("--no-announce", dest="announce", action="store_false")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print(f"# store_replay: {args.mode}, {args.batches} batches of {args.per:,}, "
          f"announcements {'on' if args.announce else 'off'}; {machine()}")
    rows = []
    for i in range(args.repeat):
        cpu = asyncio.run(replay(args.mode, args.batches, args.per, args.announce))
        rows.append([f"run {i + 1}", f"{sum(cpu.values()):.2f}",
                     *(f"{cpu.get(k, 0.0):.2f}" for k in
                       ("known subset", "mark announced", "commit page"))])
    print(table(["run", "worker CPU s", "known subset", "mark announced", "commit page"],
                rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
