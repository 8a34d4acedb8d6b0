"""The idle pass and start-up of two checkouts, alternating, on one seeded state (issue 16).

CPU figures on a shared VM move by up to 2x with the load of other work, so a change is judged
by the ratio to a baseline measured in the same run: one simulator and one seeded state (the
state a bootstrap leaves, see polling_cost.seed_state), then the idle pass (``run --once``,
every container checked once, nothing changed) of each checkout in turn, ``--rounds`` times.
Each checkout runs its own ``bench/common.py`` child, so its own code is measured, on a
configuration its own ``polling_cost.build_config`` wrote. Prints pass
and start-up CPU per run and the best of each.

    python bench/polling_ab.py --size 10000x10000 --rounds 2 BASELINE_CHECKOUT .

The state is seeded by the first checkout's notifier: put the one with the oldest state schema
first, since a newer one migrates its copy but an older one refuses a newer file (a newer
checkout's first start-up, and perhaps its first pass, then include that one-time migration).

A checkout may carry environment variables for its runs, ``PATH::NAME=VALUE[,NAME=VALUE]``
(e.g. ``.::NOTIFIER_EVENT_LOOP=asyncio`` against ``.``: one checkout on two event loops).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import polling_cost
from common import fresh_dir, machine, note, simulator, table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=polling_cost.parse_sizes, default="10000x10000",
                   help="SUBSCRIPTIONSxCONTAINERS")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("checkouts", nargs="+",
                   help="roots of the checkouts to compare, each PATH[::NAME=VALUE,...]")
    args = p.parse_args()
    [(subs, conts)] = args.size
    runs = [_checkout(c) for c in args.checkouts]
    work = fresh_dir(Path(tempfile.mkdtemp(prefix="bench-ab-")) / f"{subs}x{conts}")
    print(f"# polling_ab: {machine()}")
    rows = []
    with simulator(containers=conts, relationships=2, seed=8) as sim:
        # Each checkout's configuration from its own bench code: an older one may not know a
        # field a newer one writes (fd841d2 refuses ``source.allow_insecure_http``).
        cfgs = [_config(root, sim.url, sim.containers, subs, work) for _, root, _ in runs]
        cfg = cfgs[0]
        note(f"seeding {subs:,} streams")
        _seed(runs[0][1], sim.url, sim.containers, cfg, work)
        # Each checkout runs on its own copy of the seeded state: one whose schema is newer
        # migrates its copy at its first run, which the other could then not open.
        seeded = Path(cfg["state"]["path"])
        for k in range(len(runs)):
            mine = fresh_dir(work / f"checkout-{k}")
            for part in (seeded, *seeded.parent.glob(seeded.name + "-wal")):
                shutil.copy(part, mine / part.name)
            (mine / "config.json").write_text(json.dumps(
                {**cfgs[k], "state": {**cfgs[k]["state"], "path": str(mine / seeded.name)}}))
        for i in range(args.rounds):
            for k, (label, root, extra) in enumerate(runs):
                report = work / "report.json"
                config = work / f"checkout-{k}" / "config.json"
                subprocess.run([sys.executable, str(root / "bench" / "common.py"), "notifier",
                                str(config), str(report)], cwd=root, check=True,
                               env=dict(os.environ, PYTHONPATH=str(root), **extra),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rep = json.loads(report.read_text())
                rows.append([i + 1, label, rep["cpu_pass"], rep["cpu_startup"],
                             round(os.getloadavg()[0], 1)])
                note(f"round {i + 1} {label}: pass {rep['cpu_pass']:.2f} CPU-s, start-up "
                     f"{rep['cpu_startup']:.2f}")
    print(table(["round", "checkout", "idle pass CPU s", "start-up CPU s", "load"], rows))
    for label, _, _ in runs:
        mine = [r for r in rows if r[1] == label]
        print(f"{label}: best idle pass {min(r[2] for r in mine):.2f} CPU-s, "
              f"best start-up {min(r[3] for r in mine):.2f} CPU-s")
    return 0


def _config(root: Path, url: str, containers: list[str], subs: int, work: Path
            ) -> dict[str, Any]:
    """The benchmark's configuration as ``root``'s ``polling_cost.build_config`` writes it."""
    program = "\n".join([
        "import json, sys, types",
        "from pathlib import Path",
        "sys.path.insert(0, sys.argv[1])",
        "import polling_cost",
        "a = json.loads(sys.stdin.read())",
        "sim = types.SimpleNamespace(url=a['url'], containers=a['containers'])",
        "print(json.dumps(polling_cost.build_config(sim, a['subs'], Path(a['work']))))",
    ])
    out = subprocess.run([sys.executable, "-c", program, str(root / "bench")], cwd=root,
                         check=True, env=dict(os.environ, PYTHONPATH=str(root)),
                         input=json.dumps({"url": url, "containers": containers, "subs": subs,
                                           "work": str(work)}),
                         capture_output=True, text=True).stdout
    cfg: dict[str, Any] = json.loads(out)
    return cfg


def _seed(root: Path, url: str, containers: list[str], cfg: dict[str, object],
          work: Path) -> None:
    """The seeded state written by ``root``'s notifier (``polling_cost.seed_state``)."""
    args = work / "seed.json"
    args.write_text(json.dumps({"url": url, "containers": containers, "cfg": cfg}))
    program = ("import json, sys, types; sys.path.insert(0, sys.argv[1]); import polling_cost; "
               "a = json.load(open(sys.argv[2])); polling_cost.seed_state("
               "types.SimpleNamespace(url=a['url'], containers=a['containers']), a['cfg'])")
    subprocess.run([sys.executable, "-c", program, str(root / "bench"), str(args)], cwd=root,
                   check=True, env=dict(os.environ, PYTHONPATH=str(root)))


def _checkout(arg: str) -> tuple[str, Path, dict[str, str]]:
    """(label, root, extra environment) of ``PATH[::NAME=VALUE,...]``."""
    path, _, env_text = arg.partition("::")
    extra = dict(item.split("=", 1) for item in env_text.split(",") if item)
    root = Path(path).resolve()
    return (f"{root} {env_text}" if env_text else str(root)), root, extra


if __name__ == "__main__":
    sys.exit(main())
