"""Polling cost: notifier CPU and resident memory for many subscriptions over many containers.

For each size (subscriptions x containers; subscription i watches container i mod C), the
simulator runs in its own process (rpm unlimited, R relationships per container) and the
notifier runs ``run --once`` passes in a measured child process (see common.py):

1. bootstrap: every stream's first sync, ``emit_initial: false`` (reported, not a goal); above
   10,000 subscriptions (``--bootstrap auto``) the state a bootstrap leaves (each stream's
   caught-up token and known ids) is written instead with the store's own SQL, unmeasured,
   because a real bootstrap costs about 2 ms of notifier CPU per stream;
2. idle cycle: nothing changed; every container is checked once with syncStatus (its streams'
   tokens in chunks of ``status_chunk``), nothing is drained;
3. busy cycle: some containers changed (2 creates and 1 delete each); every container is
   checked and the streams of the changed ones are drained into a jsonl sink (fsync'd).

Reported per pass: CPU of the pass itself and of the process start-up (config validation of
every subscription, store open, loading every stream), peak RSS (VmHWM), upstream requests by
endpoint as counted by the simulator, and for the busy cycle the events written against the
changes made. The notifier's own request budget is set out of the way (rpm 6,000,000): this
measures the notifier's cost per cycle, not how long a real 120 rpm budget makes a cycle last.

Goals (issues 8 and 16): 100k subscriptions within 300 MB RSS; an idle cycle over 10k containers
costs at most 1 CPU-second with 10k subscriptions, 1.5 with 100k. These are absolute figures on
the machine of the day; polling_ab.py compares two checkouts in the same run, the reading
BENCHMARKS.md gives its verdicts by.

    python bench/polling_cost.py [--sizes 10000x1000,10000x10000,100000x1000,100000x10000]
                                 [--relationships 2] [--busy-fraction 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    STATIC_TOKEN_USER,
    NotifierRun,
    SimProcess,
    fresh_dir,
    machine,
    mib,
    note,
    notifier_config,
    pyspy_summary,
    run_notifier,
    simulator,
    table,
)

RSS_GOAL_MIB = 300e6 / 2**20  # 300 MB, the stricter reading (286 MiB)
IDLE_CPU_GOAL = 1.0  # 10,000 containers, up to 10,000 subscriptions (issues 8 and 16)
IDLE_CPU_GOAL_100K = 1.5  # 10,000 containers, 100,000 subscriptions (issue 16)
STATUS_CHUNK = 100
CREATES, DELETES = 2, 1
AUTO_SYNC_MAX = 10_000  # a real bootstrap costs ~2 ms CPU per stream: seed above this


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        subs, _, conts = part.strip().lower().partition("x")
        out.append((int(subs), int(conts)))
    return out


def build_config(sim: SimProcess, subs: int, work: Path) -> dict[str, Any]:
    containers = sim.containers
    subscriptions = [
        {"name": f"s{i:06d}", "credential": "bench",
         "container_id": containers[i % len(containers)], "sinks": ["archive"],
         "emit_initial": False}
        for i in range(subs)
    ]
    return notifier_config(
        sim_url=sim.url, state_path=work / "state.db", subscriptions=subscriptions,
        sinks=[{"name": "archive", "type": "jsonl", "path": str(work / "events.jsonl")}],
        poll={"status_chunk": STATUS_CHUNK},
    )


def subs_per_container(subs: int, containers: int) -> list[int]:
    return [subs // containers + (1 if i < subs % containers else 0) for i in range(containers)]


async def _fetch_seed(sim_url: str, containers: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Per container: a caught-up sync token of the static-token user and the live ids."""
    import aiohttp

    out: dict[str, tuple[str, list[str]]] = {}
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:
        async def one(cid: str) -> None:
            async with sem:
                base = f"{sim_url}/_sim/containers/{cid}"
                async with session.get(f"{base}/sync-token?user={STATIC_TOKEN_USER}") as r:
                    token = (await r.json())["syncToken"]
                async with session.get(f"{base}/truth") as r:
                    live = (await r.json())["live"]
                out[cid] = (token, live)

        await asyncio.gather(*(one(c) for c in containers))
    return out


def seed_state(sim: SimProcess, cfg: dict[str, Any]) -> float:
    """Write the state a completed bootstrap leaves (token and known ids of every stream)
    with the store's own SQL, unsynced, in the benchmark process; returns seconds taken."""
    import sqlite3

    from notifier.core.stream_state import filter_fingerprint
    from notifier.state import sqlite_known, sqlite_streams
    from notifier.state.sqlite import SqliteStateStore

    t0 = time.monotonic()
    seeds = asyncio.run(_fetch_seed(sim.url, sim.containers))
    path = Path(cfg["state"]["path"])

    async def create() -> None:
        async with SqliteStateStore(path):  # creates and migrates the file
            pass

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        ids = sqlite_streams.StreamIds()
        now = time.time()
        fingerprint = filter_fingerprint(None, None)  # no domains, no query
        for sub in cfg["subscriptions"]:
            token, live = seeds[sub["container_id"]]
            sqlite_known.commit_page(
                conn, ids, (sub["name"], sub["container_id"]), next_token=token,
                resync_cursor=None, in_resync=False, add_ids=live, remove_ids=[], seen_ids=[],
                outbox=[], bodies={}, filter_fingerprint=fingerprint, listed_under=None,
                changed=True, now=now)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.monotonic() - t0


def make_changes(sim: SimProcess, containers: list[str]) -> int:
    """CREATES creates and DELETES deletes in each container; returns the changes made."""
    made = 0
    for cid in containers:
        made += len(sim.post(f"/_sim/containers/{cid}/relationships", {"count": CREATES})["ids"])
        made += len(sim.post(f"/_sim/containers/{cid}/relationships:delete",
                             {"count": DELETES})["deleted"])
    return made


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def measure(sim: SimProcess, cfg: dict[str, Any], work: Path, name: str,
            profile: str | None = None) -> tuple[NotifierRun, dict[str, int]]:
    sim.reset_stats()
    run = run_notifier(cfg, work, name=name, profile=profile)
    if run.status != 0:
        print(run.log[-3000:], file=sys.stderr)
        raise SystemExit(f"{name}: notifier exited with status {run.status}")
    return run, sim.requests()


def one_size(subs: int, conts: int, rels: int, busy_fraction: float, work: Path,
             bootstrap: str, profile: str | None = None) -> list[dict[str, Any]]:
    note(f"{subs:,} subscriptions over {conts:,} containers: starting the simulator")
    t0 = time.monotonic()
    with simulator(containers=conts, relationships=rels, seed=8,
                   log_path=work / "simulator.log") as sim:
        note(f"simulator ready in {time.monotonic() - t0:.0f}s, RSS {mib(sim.rss_kib()):.0f} MiB")
        cfg = build_config(sim, subs, work)
        per = subs_per_container(subs, conts)
        expected_status = sum(math.ceil(n / STATUS_CHUNK) for n in per if n)
        rows = []
        if bootstrap == "sync" or (bootstrap == "auto" and subs <= AUTO_SYNC_MAX):
            note("bootstrap pass (emit_initial false)")
            run, reqs = measure(sim, cfg, work, "bootstrap")
            rows.append(_row("bootstrap", subs, conts, run, reqs, expected_status=None))
        else:
            note("seeding the state a bootstrap leaves (not measured)")
            took = seed_state(sim, cfg)
            note(f"seeded {subs:,} streams in {took:.0f}s")
        note("idle pass")
        run, reqs = measure(sim, cfg, work, "idle", profile)
        rows.append(_row("idle", subs, conts, run, reqs, expected_status=expected_status))
        busy = sim.containers[:max(1, round(conts * busy_fraction))]
        made = make_changes(sim, busy)
        lines_before = count_lines(work / "events.jsonl")
        note(f"busy pass ({len(busy):,} containers changed, {made:,} changes)")
        run, reqs = measure(sim, cfg, work, "busy")
        events = count_lines(work / "events.jsonl") - lines_before
        expected_events = sum(per[i] * (CREATES + DELETES) for i in range(len(busy)))
        row = _row("busy", subs, conts, run, reqs, expected_status=expected_status)
        row["events"] = f"{events:,} / {expected_events:,}"
        rows.append(row)
    return rows


def _row(kind: str, subs: int, conts: int, run: NotifierRun, reqs: dict[str, int],
         expected_status: int | None) -> dict[str, Any]:
    status = reqs.get("syncStatus", 0)
    return {
        "size": f"{subs:,} x {conts:,}", "pass": kind,
        "pass CPU s": run.cpu_pass, "pass wall s": run.wall_pass,
        "start-up CPU s": run.cpu_startup, "peak RSS MiB": mib(run.peak_rss_kib),
        "RSS after pass MiB": mib(run.rss_after_pass_kib),
        "syncStatus": status, "sync": reqs.get("sync", 0),
        "status per container": status / conts,
        "expected syncStatus": "-" if expected_status is None else expected_status,
        "events": "-",
        "_subs": subs, "_conts": conts, "_cpu": run.cpu_pass, "_rss": mib(run.peak_rss_kib),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=parse_sizes,
                   default=parse_sizes("10000x1000,10000x10000,100000x1000,100000x10000"),
                   help="comma-separated SUBSCRIPTIONSxCONTAINERS")
    p.add_argument("--relationships", type=int, default=2,
                   help="relationships per container at start (each stream knows them)")
    p.add_argument("--busy-fraction", type=float, default=0.05,
                   help="share of containers changed before the busy pass")
    p.add_argument("--bootstrap", choices=["auto", "sync", "seed"], default="auto",
                   help="how the state of the first sync is made: by the notifier (sync, "
                   "measured), written directly with the store's SQL (seed), or sync up to "
                   f"{AUTO_SYNC_MAX:,} subscriptions and seed above (auto)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--profile", choices=["cprofile", "cprofile-cpu", "pyinstrument", "py-spy"],
                   default=None,
                   help="profile the idle passes (their figures are then not comparable)")
    args = p.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-polling-"))
    print(f"# polling_cost: {machine()}")
    rows: list[dict[str, Any]] = []
    for subs, conts in args.sizes:
        work = fresh_dir(base / f"{subs}x{conts}")
        rows.extend(one_size(subs, conts, args.relationships, args.busy_fraction, work,
                             args.bootstrap, args.profile))
        if args.profile in ("cprofile", "cprofile-cpu"):
            import pstats

            stats = pstats.Stats(str(work / "idle.pstats"))
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
        elif args.profile == "pyinstrument":
            print((work / "idle.pstats").read_text())
        elif args.profile == "py-spy":
            print(pyspy_summary(work / "idle.pyspy"))
    cols = [c for c in rows[0] if not c.startswith("_")]
    print(table(cols, [[r[c] for c in cols] for r in rows]))
    print()
    for r in rows:
        if r["_subs"] >= 100_000:
            ok = r["_rss"] <= RSS_GOAL_MIB
            print(f"goal: {r['size']} {r['pass']}: peak RSS {r['_rss']:.0f} MiB "
                  f"({r['_rss'] * 1.048576:.0f} MB) within 300 MB: {'met' if ok else 'MISSED'}")
        if r["pass"] == "idle" and r["_conts"] >= 10_000:
            goal = IDLE_CPU_GOAL_100K if r["_subs"] >= 100_000 else IDLE_CPU_GOAL
            print(f"goal: {r['size']} idle cycle: {r['_cpu']:.2f} CPU-s <= {goal}: "
                  f"{'met' if r['_cpu'] <= goal else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
