"""Freshness in every regime: round-robin vs adaptive over a matrix of regimes, in virtual time.

Each cell is N containers on ONE credential at the default configuration (120 requests/min,
reserve 0.2, poll.interval 5 s, max_staleness unset); a share of the containers are busy
(Poisson changes at a rate given per round-robin cycle), the others quiet (``--quiet-per-cycle``
each). Both policies run the product's planner and request budget against a model of the
service in virtual time (bench/freshness_model.py), on the same changes, from the start:
learning included. Per cell:

- busy detection p50, adaptive / round-robin (goal ≤ 0.2);
- the *bound*: the best ratio the budget allows a policy that knows which containers are
  busy. The budget counts requests (120 in any 60 s: 2 a second): quiet containers need one
  request each per two round-robin cycles (their goal), the busy ones share the rest, each
  check costing the cheapest of a direct sync per token, a status call plus a sync per changed
  token, and (the tokens of a container change together here) one direct sync plus the other
  tokens' syncs when it found changes. Changes are Poisson, so whatever the schedule the share
  of them found within d is at most d x checks per second / busy containers: p50 ≥ half the
  mean period (plus a request), and spreading checks unevenly over the busy ones cannot help.
  Where the bound is above 0.16 the goal is 1.25x the bound instead of 0.2;
- *learn*, for reference (the verdict stays on the bound): the same policy told nothing, so a
  busy container is known only from the check that finds its first change (the goal counts
  from the start, learning included), containers not yet seen changing checked every 0.5 to 2
  cycles, whichever gives the least p50 (``learning_bound_p50``). The bound leaves learning
  out; this shows what it costs in each cell (most where busy containers change least often
  over the fewest cycles);
- quiet detection p99 and the oldest change left undelivered, in round-robin cycles
  (goals ≤ 2, and none older than 2 cycles undelivered at the end);
- the most requests granted in any 60 s window (≤ 120: no 429s).

    python bench/freshness.py              # quick: 5 cells, about a minute
    python bench/freshness.py --full --jobs 3   # the 28 cells of issue 15, cells in parallel
    python bench/freshness.py --cell 1000 0.05 2 1   # one cell: containers share rate subs
    python bench/freshness.py --cell 100 0.2 2 1 --seeds 1 2 3 4   # ratio / bound over seeds
    python bench/freshness_live.py         # the end-to-end run: real App, HTTP simulator
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:  # this checkout's notifier, whatever is pip-installed
        sys.path.insert(0, str(path))

from freshness_model import Cell, Model, Run, pct  # noqa: E402

QUICK = [(100, 0.05, 2.0, 1), (100, 0.2, 5.0, 1), (1000, 0.05, 0.5, 1), (1000, 0.01, 5.0, 1),
         (1000, 0.05, 2.0, 3)]


def full_matrix() -> list[tuple[int, float, float, int]]:
    cells = [(n, share, rate, 1) for n in (100, 1000, 10_000) for share in (0.01, 0.05, 0.2)
             for rate in (0.5, 2.0, 5.0)]
    return [*cells, (1000, 0.05, 2.0, 3)]


def bound_p50(cell: Cell, rr_cycle: float) -> float:
    """The least busy p50 the budget allows (see the module docstring)."""
    s = cell.settings
    per_s = s.requests_per_minute / 60.0
    busy_n = max(1, round(cell.containers * cell.busy_share))
    calls = math.ceil(cell.subs / max(1, s.status_chunk))
    quiet_need = (cell.containers - busy_n) * calls / (2.0 * rr_cycle)
    left = per_s - quiet_need
    lam = cell.busy_per_cycle / cell.cycle
    period = busy_n * cell.subs / max(left, 1e-9)
    for _ in range(50):  # the cost of a check depends on the period: iterate to a fixed point
        p = -math.expm1(-lam * period)
        # Every sync, a status call and a sync per changed token, or (the tokens of a
        # container change together here) one sync, and the others only when it found some.
        cost = min(cell.subs, calls + cell.subs * p, 1 + (cell.subs - 1) * p)
        period = busy_n * cost / max(left, 1e-9)
    return period / 2 + cell.latency


LEARN_LOOKS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # checks of unseen containers, in cycles


def learning_bound_p50(cell: Cell, rr_cycle: float, changes: Sequence[Sequence[float]]) -> float:
    """The least busy p50 the budget allows a policy that must first see a change to know a
    container is busy (the goal counts from the start, learning included), for these busy
    containers' ``changes``: the least over ``E`` in ``LEARN_LOOKS`` cycles of
    ``_learning_p50`` (checking unseen containers more often finds busy ones sooner and leaves
    less to them). A reference for what learning costs, not a proof: the verdict stays on
    ``bound_p50``."""
    rng = random.Random(cell.seed)
    found = (_learning_p50(cell, looks * rr_cycle, changes, rng) for looks in LEARN_LOOKS)
    return min((p for p in found if p is not None), default=math.inf)


def _learning_p50(cell: Cell, every: float, changes: Sequence[Sequence[float]],
                  rng: random.Random) -> float | None:
    """``bound_p50``'s policy, told nothing: every container not yet seen changing is checked
    every ``every`` seconds (phases spread evenly), a busy one is known from the check that
    finds its first change (which delivers what it found so far), and the busy ones known share
    what the others leave, checked at regular intervals no shorter than ``poll.interval`` (a
    change waits a uniform share of the period). Quiet changes mislead it in nothing. None when
    the unseen checks alone exceed the budget."""
    s = cell.settings
    per_s = s.requests_per_minute / 60.0
    calls = math.ceil(cell.subs / max(1, s.status_chunk))
    lam = cell.busy_per_cycle / cell.cycle
    found = []  # when each busy container is first seen changing
    for i, times in enumerate(changes):
        phase = every * (i + 0.5) / len(changes)
        found.append(math.inf if not times else
                     phase + every * max(0, math.ceil((times[0] - phase) / every)))
    order = sorted(found)
    latencies = []
    for times, seen in zip(changes, found, strict=True):
        for t in times:
            if t <= seen:
                latencies.append(seen - t + cell.latency)
                continue
            known = bisect.bisect_right(order, t)
            left = per_s - (cell.containers - known) * calls / every
            if left <= 0:
                return None
            period = known * cell.subs / left
            for _ in range(20):  # the cost of a check depends on the period
                p = -math.expm1(-lam * period)
                cost = min(cell.subs, calls + cell.subs * p, 1 + (cell.subs - 1) * p)
                period = known * cost / left
            latencies.append(rng.random() * max(period, s.interval) + cell.latency)
    return pct(latencies, 50) if latencies else None


def run_cell(containers: int, share: float, rate: float, subs: int,
             quiet_per_cycle: float, seed: int) -> dict[str, Any]:
    cell = Cell(containers=containers, busy_share=share, busy_per_cycle=rate, subs=subs,
                quiet_per_cycle=quiet_per_cycle, seed=seed)
    started = time.monotonic()
    rr = Model(cell, "round_robin").simulate()
    model = Model(cell, "adaptive")
    ad = model.simulate()
    cycle = pct(rr.all_gaps, 50)
    ratio = pct(ad.busy, 50) / pct(rr.busy, 50)
    bound = bound_p50(cell, cycle) / pct(rr.busy, 50)
    learning = learning_bound_p50(cell, cycle, [model.streams[cid][0].changes
                                                for cid in sorted(model.busy)])
    learning /= pct(rr.busy, 50)
    target = max(0.2, 1.25 * bound)
    oldest_left = ad.undelivered_old + rr.undelivered_old
    return {
        "cell": {"containers": containers, "busy_share": share, "busy_per_cycle": rate,
                 "subs": subs, "quiet_per_cycle": quiet_per_cycle, "seed": seed,
                 "cycles": cell.run_cycles},
        "rr_cycle_s": cycle, "rr": summary(rr, cycle), "adaptive": summary(ad, cycle),
        "busy_ratio": ratio, "bound_ratio": bound, "target": target,
        "learning_bound_ratio": learning,
        "busy_goal_met": ratio <= target,
        "quiet_goal_met": pct(ad.quiet, 99) <= 2 * cycle and oldest_left == 0,
        "no_429": max(rr.max_in_window, ad.max_in_window) <= cell.settings.requests_per_minute,
        "seconds": time.monotonic() - started,
    }


def _run(args: tuple[int, float, float, int, float, int]) -> dict[str, Any]:
    return run_cell(*args)


def summary(r: Run, cycle: float) -> dict[str, Any]:
    return {"busy_p50": pct(r.busy, 50), "busy_p99": pct(r.busy, 99),
            "quiet_p99_cycles": pct(r.quiet, 99) / cycle,
            "quiet_max_cycles": pct(r.quiet, 100) / cycle,
            "quiet_worst_gap_cycles": max(r.quiet_gaps, default=0.0) / cycle,
            "undelivered_older_than_2_cycles": r.undelivered_old,
            "busy_n": len(r.busy), "quiet_n": len(r.quiet), "requests": r.requests,
            "status_calls": r.status_calls, "direct_syncs": r.direct_syncs,
            "follow_up_syncs": r.follow_syncs, "max_requests_in_60s": r.max_in_window}


HEADER = (f"{'N':>6} {'busy':>5} {'rate':>4} {'subs':>4} {'cycle':>7} | {'rr p50':>7} "
          f"{'ad p50':>7} {'ratio':>6} {'bound':>6} {'goal':>6} {'learn':>6} | {'q p99':>5} "
          f"{'q max':>5} {'gap':>5} {'old':>3} | {'max/60s':>7} | verdict")


def line(res: dict[str, Any]) -> str:
    c, ad, rr = res["cell"], res["adaptive"], res["rr"]
    ok = res["busy_goal_met"] and res["quiet_goal_met"] and res["no_429"]
    why = [] if ok else [w for w, met in (("busy", res["busy_goal_met"]),
                                          ("quiet", res["quiet_goal_met"]),
                                          ("429", res["no_429"])) if not met]
    return (f"{c['containers']:>6} {c['busy_share']:>5.0%} {c['busy_per_cycle']:>4g} "
            f"{c['subs']:>4} {res['rr_cycle_s']:>6.0f}s | {rr['busy_p50']:>6.1f}s "
            f"{ad['busy_p50']:>6.1f}s {res['busy_ratio']:>6.3f} {res['bound_ratio']:>6.3f} "
            f"{res['target']:>6.3f} {res['learning_bound_ratio']:>6.3f} | "
            f"{ad['quiet_p99_cycles']:>5.2f} "
            f"{ad['quiet_max_cycles']:>5.2f} {ad['quiet_worst_gap_cycles']:>5.2f} "
            f"{ad['undelivered_older_than_2_cycles']:>3} | "
            f"{max(ad['max_requests_in_60s'], rr['max_requests_in_60s']):>7} | "
            f"{'met' if ok else 'MISSED ' + ','.join(why)}")


def over_seeds(runs: Sequence[dict[str, Any]]) -> str:
    """One cell's ratio / bound over several seeds: mean ± standard deviation, each seed's,
    and how many seeds met every goal."""
    c = runs[0]["cell"]
    x = [r["busy_ratio"] / r["bound_ratio"] for r in runs]
    met = sum(1 for r in runs if r["busy_goal_met"] and r["quiet_goal_met"] and r["no_429"])
    return (f"{c['containers']:>6} {c['busy_share']:>5.0%} {c['busy_per_cycle']:>4g} "
            f"{c['subs']:>4}  {statistics.fmean(x):.2f} ± {statistics.pstdev(x):.2f} "
            f"[{' '.join(f'{v:.2f}' for v in x)}]  met {met} of {len(runs)}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="the whole matrix (28 cells)")
    ap.add_argument("--cell", nargs=4, action="append", metavar=("N", "SHARE", "RATE", "SUBS"),
                    help="one cell (repeatable)")
    ap.add_argument("--quiet-per-cycle", type=float, default=0.01,
                    help="changes per round-robin cycle of one quiet container")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="run each cell with each of these seeds (instead of --seed) and add "
                         "each cell's ratio / bound over them (one seed moves it by several "
                         "hundredths)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    a = ap.parse_args(argv)
    cells: Iterable[tuple[int, float, float, int]] = (
        [(int(n), float(s), float(r), int(k)) for n, s, r, k in a.cell] if a.cell
        else full_matrix() if a.full else QUICK)
    print(HEADER, flush=True)
    seeds = a.seeds or [a.seed]
    todo = [(n, share, rate, subs, a.quiet_per_cycle, seed) for n, share, rate, subs in cells
            for seed in seeds]
    results = []
    with multiprocessing.Pool(max(1, a.jobs)) as pool:  # printed in the matrix's order
        for res in pool.imap(_run, todo):
            results.append(res)
            print(line(res), flush=True)
    met = sum(1 for r in results if r["busy_goal_met"] and r["quiet_goal_met"] and r["no_429"])
    print(f"\n{met} of {len(results)} cells meet every goal (busy: ratio <= goal, where goal "
          "is 0.2 or 1.25 x the bound when the bound is above 0.16; quiet p99 and oldest "
          "undelivered in round-robin cycles; max/60s <= 120: no 429s)")
    if len(seeds) > 1:
        print(f"\nratio / bound over seeds {' '.join(map(str, seeds))}:")
        for k in range(0, len(results), len(seeds)):
            print(over_seeds(results[k:k + len(seeds)]))
    if a.json is not None:
        a.json.write_text(json.dumps({"defaults": asdict(Cell()), "cells": results}, indent=2,
                                     default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
