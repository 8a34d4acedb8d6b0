"""Hub discovery at scale: one hub of 1,000 projects, watched through ``hub_id``.

The simulator runs in this process; the notifier runs ``notifier run`` as a child process whose
peak resident set (VmHWM) is read from /proc while it runs. Two runs on the same data:

* ``hub``: one subscription with ``hub_id`` (the projects are discovered: paged listing on the
  Data Management budget, then one stream per project);
* ``static``: the same 1,000 containers listed by hand in ``container_ids`` (the baseline).

Each project holds R relationships and ``emit_initial`` is true, so start-up is over when every
project's bootstrap events are in the jsonl sink. Reported: seconds from spawn until the project
list is known (hub run: the status file says every project is watched) and until every project
is bootstrapped, peak RSS, listing requests (Data Management) and Relationship Service requests.
The notifier's Relationship Service budget is set out of the way (as in polling_cost.py): with
Autodesk's 120 requests per minute the 1,000 bootstraps alone take about 9 minutes, whichever
way the projects were configured; discovery itself is bounded by its own 50/min budget.

    python bench/hub_discovery.py [--projects 1000] [--relationships 2] [--page-size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from common import ROOT, machine, mib, proc_status_kib, table

from notifier.simulator import Knobs, Simulator, SimulatorConfig
from notifier.simulator.config import DEFAULT_ACCESS_TOKEN

HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


def config(work: Path, sim_url: str, mode: str, containers: list[str]) -> dict[str, Any]:
    sub: dict[str, Any] = {"name": "all-projects", "credential": "bench", "sinks": ["archive"],
                           "emit_initial": True}
    if mode == "hub":
        sub.update(hub_id=HUB, discover_every="15m")
    else:
        sub["container_ids"] = containers
    return {
        "source": {"base_url": sim_url, "allow_insecure_http": True},
        "credentials": [{"name": "bench", "access_token": DEFAULT_ACCESS_TOKEN,
                         "requests_per_minute": 6_000_000}],
        "state": {"path": str(work / "state.db")},
        "poll": {"interval": "30s", "max_staleness": "10m"},
        "subscriptions": [sub],
        "sinks": [{"name": "archive", "type": "jsonl", "path": str(work / "events.jsonl")}],
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING", "format": "text"},
    }


def lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def watched(status_file: Path) -> int:
    try:
        return int(orjson.loads(status_file.read_bytes())[0]["watched"])
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return 0


async def one_run(sim: Simulator, mode: str, projects: list[str], rels: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"hubbench-{mode}-"))
    cfg_path = work / "notifier.yaml"
    cfg_path.write_text(yaml.safe_dump(config(work, sim.url, mode, [p[2:] for p in projects])))
    sim.hubs.stats.requests.clear()
    sim.state.stats.reset()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "run", "--config", str(cfg_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env)
    listed_at = None
    want = len(projects) * rels
    status_file = work / "state.db.hubs.json"
    peak = 0
    try:
        while True:
            await asyncio.sleep(0.05)
            peak = max(peak, proc_status_kib("VmHWM", proc.pid))
            if listed_at is None and (mode == "static" or watched(status_file) == len(projects)):
                listed_at = time.monotonic() - started
            if lines(work / "events.jsonl") >= want:
                done_at = time.monotonic() - started
                break
            if proc.returncode is not None or time.monotonic() - started > 900:
                raise SystemExit(f"{mode}: the notifier stopped or took too long")
        await asyncio.sleep(1.0)  # settle: the peak after the last checkpoint
        peak = max(peak, proc_status_kib("VmHWM", proc.pid))
    finally:
        proc.terminate()
        await proc.wait()
    return {"mode": mode, "listed_s": listed_at, "bootstrapped_s": done_at,
            "peak_rss_mib": mib(peak), "dm_requests": sim.hubs.stats.requests["projects"],
            "rs_requests": sum(sim.state.stats.requests.values())}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--relationships", type=int, default=2)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    async with Simulator(SimulatorConfig(containers=[], seed=1, knobs=Knobs(rpm=0))) as sim:
        sim.hubs.add_hub(HUB, "Bench hub")
        sim.hubs.set_knobs(page_size=args.page_size)
        projects = [sim.hubs.add_project(HUB, f"Project {i:04d}",
                                         relationships=args.relationships)
                    for i in range(args.projects)]
        results = [await one_run(sim, mode, projects, args.relationships)
                   for mode in ("static", "hub")]
    print(machine())
    print(f"{args.projects} projects x {args.relationships} relationships, "
          f"page size {args.page_size}")
    print(table(["run", "project list known (s)", "all bootstrapped (s)", "peak RSS (MiB)",
                 "listing requests", "relationship requests"],
                [[r["mode"], r["listed_s"] if r["mode"] == "hub" else "-", r["bootstrapped_s"],
                  r["peak_rss_mib"],
                  r["dm_requests"], r["rs_requests"]] for r in results]))


if __name__ == "__main__":
    asyncio.run(main())
