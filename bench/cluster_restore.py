"""Cluster-mode restore: a replica taking over a work partition that holds 1,000,000 known
relationships rebuilds its local cache from the state topic. How long, and how much memory?

The simulator (its own process) serves one container of N relationships to one credential. The
state topic gets the state of one stream that has completed its bootstrap (the caught-up sync
token, N known ids with the bodies the store keeps), all in the credential's work partition:

- ``--seed stream`` (default): a single-process SQLite state file is written with the store's
  own SQL (as bench/overwrite.py does) and its rows are written to the state topic, one record
  per row as a fully compacted topic holds them, with the cluster code's own row encoding
  (``notifier.cluster.capture``/``records``), streamed by an idempotent producer;
- ``--seed import``: the same file moved with ``notifier state import`` instead (it streams
  the rows in batches; before it did, it held every row in memory: more than 10 GB for 1M);
- ``--seed bootstrap``: replica A bootstraps the container itself (N events and the state in
  the same transactions; the topic then also holds the bootstrap's intermediate records until
  Kafka compacts them), then stops.

Then replica B (``notifier run --config`` with a ``cluster:`` section) starts with an empty
cache, is assigned every work partition and restores them before it polls. Measured on B: the
restore of the big partition (its log line: records, seconds), the time from its start until it
owns and has restored everything, its peak RSS (VmHWM) and the size of its cache file.

    python bench/cluster_restore.py [--relationships 1000000] [--seed stream|import|bootstrap]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cluster_common import Replica, cluster_config, wait_until
from common import (
    PYTHON,
    ROOT,
    fresh_dir,
    kafka_broker,
    machine,
    mib,
    note,
    proc_status_kib,
    simulator,
    table,
)

WORK_PARTITIONS = 12
RESTORED = re.compile(r"work partition (\d+) restored: (\d+) records in ([0-9.]+)s")


def published(replica: Replica) -> float:
    return replica.metrics().get('notifier_sink_events_published_total{outcome="ok",sink="events"}',
                                 0.0)


def restores(log: str) -> list[tuple[int, int, float]]:
    """(partition, records, seconds) of every restore a replica logged."""
    return [(int(p), int(n), float(s)) for p, n, s in RESTORED.findall(log)]


def stream_state(sim: Any, cfg: dict[str, Any], work: Path, bootstrap: str) -> int:
    """A completed bootstrap's state file (the store's own SQL), its rows written to the state
    topic as the cluster code encodes them, one record per row; the peak RSS in KiB."""
    from overwrite import seed_state

    seeded = work / "seeded.db"
    seed_state(sim, {**cfg, "state": {"path": str(seeded)}}, sim.containers[0])
    config = work / "seed.json"
    config.write_text(json.dumps(cfg))
    total = asyncio.run(_stream_rows(config, seeded))
    note(f"streamed {total:,} rows into {cfg['cluster']['state_topic']}")
    return proc_status_kib("VmHWM")


async def _stream_rows(config_path: Path, seeded: Path) -> int:
    import sqlite3

    from aiokafka import AIOKafkaProducer

    from notifier.cluster import capture
    from notifier.cluster.partitions import work_map
    from notifier.cluster.records import CHUNK_ROWS, encode_key
    from notifier.cluster.topic import client_options, ensure_state_topic
    from notifier.config import load_config

    config = load_config(config_path)
    assert config.cluster is not None
    options = client_options(config.cluster)
    await ensure_state_topic(config.cluster, options)
    work = work_map(config)
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    conn = sqlite3.connect(f"file:{seeded}?mode=ro", uri=True)
    total = 0
    try:
        tables = capture.tables_of(conn)
        pending = []
        for key, value in capture.all_rows(conn, tables, CHUNK_ROWS):
            p = capture.row_partition(work, tables, key)
            assert p is not None
            pending.append(await producer.send(config.cluster.state_topic, key=encode_key(key),
                                               value=value, partition=p))
            total += 1
            if len(pending) >= 20_000:  # bounded memory: wait for a window of sends
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        conn.close()
        await producer.stop()
    return total


def import_state(sim: Any, cfg: dict[str, Any], work: Path) -> int:
    """A completed bootstrap's state file (the store's own SQL), moved into the state topic by
    ``notifier state import``; the import's peak RSS in KiB."""
    from overwrite import seed_state

    seeded = work / "seeded.db"
    seed_state(sim, {**cfg, "state": {"path": str(seeded)}}, sim.containers[0])
    config = work / "import.json"
    config.write_text(json.dumps({**cfg, "state": {"path": str(work / "import-cache.db")}}))
    log = work / "import.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PYTHON, "-m", "notifier", "state", "--config", str(config),
                                 "import", "--in", str(seeded)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: the peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"notifier state import failed ({proc.returncode}):\n{text[-3000:]}")
    note(text.strip().splitlines()[-1] if text.strip() else "imported")
    return int(usage.ru_maxrss)


def bootstrap_state(cfg: dict[str, Any], work: Path, n: int) -> int:
    """Replica A bootstraps the container into the state topic, then stops; its peak RSS."""
    a = Replica("replica-a", work / "replica-a", cfg)
    note(f"replica A bootstraps {n:,} relationships into the state topic")
    a.start()
    try:
        wait_until(lambda: published(a) >= n, 3600, f"A publishing {n:,} events", 2.0)
        rss = a.sample_memory()
        time.sleep(3.0)
        if a.terminate() != 0:
            raise SystemExit(f"replica A failed:\n{a.log()[-3000:]}")
    finally:
        if a.running:
            a.kill()
    return rss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relationships", type=int, default=1_000_000)
    p.add_argument("--seed", choices=["stream", "import", "bootstrap"], default="stream",
                   help="how the state topic gets the big partition (see above)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    n = args.relationships
    work = fresh_dir(args.workdir or Path(tempfile.mkdtemp(prefix="bench-cluster-restore-")))
    print(f"# cluster_restore: one partition holding {n:,} known relationships; {machine()}")
    run = uuid.uuid4().hex[:8]
    with kafka_broker() as bootstrap, simulator(containers=1, relationships=n, seed=5,
                                                log_path=work / "simulator.log") as sim:
        cfg = cluster_config(
            sim_url=sim.url, bootstrap=bootstrap, group=f"bench-restore-{run}",
            topic=f"bench-restore-{run}", credentials=["bench"],
            subscriptions=[{"name": "big", "credential": "bench",
                            "container_id": sim.containers[0], "sinks": ["events"],
                            "emit_initial": True}],
            work_partitions=WORK_PARTITIONS, poll={"interval": "5s"})
        t0 = time.monotonic()
        if args.seed == "stream":
            seed_rss = stream_state(sim, cfg, work, bootstrap)
            seed_what = "seed: state file written, its rows streamed"
        elif args.seed == "import":
            seed_rss = import_state(sim, cfg, work)
            seed_what = "seed: state file written, notifier state import"
        else:
            seed_rss = bootstrap_state(cfg, work, n)
            seed_what = "seed: replica A bootstraps (events + state)"
        seed_s = time.monotonic() - t0
        note(f"seeded in {seed_s:.0f} s; replica B restores with an empty cache")
        b = Replica("replica-b", work / "replica-b", cfg)
        t1 = time.monotonic()
        b.start()
        try:
            def restored() -> bool:
                b.sample_memory()
                m = b.metrics()
                return (m.get("notifier_cluster_owned_partitions") == WORK_PARTITIONS
                        and m.get("notifier_cluster_restoring_partitions") == 0
                        and len(restores(b.log())) >= WORK_PARTITIONS)

            wait_until(restored, 3600, "B owning and having restored everything", 0.25)
            ready_s = time.monotonic() - t1
            m = b.metrics()
            b_rss = b.sample_memory()
            cache = sum(f.stat().st_size for f in b.workdir.glob("cache.db*"))
            if b.terminate() != 0:
                raise SystemExit(f"replica B failed:\n{b.log()[-3000:]}")
        finally:
            if b.running:
                b.kill()
    part, records, seconds = max(restores(b.log()), key=lambda r: r[1])
    rows: list[list[Any]] = [
        [seed_what, n, seed_s, "-", mib(seed_rss)],
        [f"B: restore of partition {part}", records, seconds, "-", "-"],
        ["B: start until everything restored", m["notifier_cluster_restore_records_total"],
         ready_s, m["notifier_cluster_restore_seconds_sum"], mib(b_rss)],
    ]
    print(table(["step", "records", "wall s", "sum of restore s", "peak RSS MiB"], rows))
    print(f"\nB's cache after the restore: {cache / 2**20:,.0f} MiB; restore rate "
          f"{records / seconds:,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
