"""Freshness benchmark: detection latency under one credential's budget, round-robin vs adaptive.

The simulator (in this process, on 127.0.0.1) serves N containers to ONE credential; a share of
them are busy (Poisson changes at ``--busy-per-hour`` each), the rest quiet (``--quiet-changes``
creations spread over the whole measured window). The notifier (``App``, in this process, with a
sink that stamps every event as it is published) runs twice on the same change schedule: first
with ``poll.scheduler: round_robin``, then ``adaptive``. Each run gets a fresh simulator with the
same seed and starts from the same bootstrapped state (one sync token per container), so the two
runs see the same data and the same changes at the same offsets.

Time is compressed by K: the request budget (simulator and credential), the change rates and the
poll durations are all scaled by K, so a K=20 run of 165 s stands for 55 minutes of real time.
Latencies are printed in run seconds and scaled back to real time (times K).

Measured per run, for changes made after the warm-up and early enough to be detected before the
run ends: detection latency (the change's time in the simulator's ground truth → the event handed
to the sink) p50/p99 for busy and quiet containers; the worst gap between two successful checks of
a quiet container (and the typical gap of the round-robin run: its cycle); 429s (simulator stats).

    python bench/freshness_live.py                  # defaults: 1,000 containers, K=20, ~6 min
    python bench/freshness_live.py --containers 200 --duration 60 --warmup 20   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's notifier, whatever is pip-installed
    sys.path.insert(0, str(ROOT))

from notifier.app import App  # noqa: E402
from notifier.config import Config  # noqa: E402
from notifier.core.events import Event  # noqa: E402
from notifier.metrics import Metrics  # noqa: E402
from notifier.simulator import Knobs, Simulator, SimulatorConfig  # noqa: E402
from notifier.simulator.config import DEFAULT_ACCESS_TOKEN  # noqa: E402

log = logging.getLogger("bench.freshness")

BASE_RPM = 120  # Autodesk's per-user budget
SAMPLE_EVERY = 0.2  # seconds between reads of the scheduler's last-check times


@dataclass(frozen=True)
class Params:
    containers: int = 1000
    busy_share: float = 0.05
    busy_per_hour: float = 12.0  # real-time Poisson rate of one busy container
    quiet_changes: int = 30  # creations in quiet containers, over the measured window
    k: float = 20.0
    duration: float = 165.0  # run seconds per policy
    warmup: float = 60.0  # run seconds before changes count
    interval: float = 30.0  # real poll.interval
    max_staleness: float = 1080.0  # real poll.max_staleness
    reserve: float = 0.1
    seed: int = 7

    @property
    def rpm(self) -> int:
        return round(BASE_RPM * self.k)

    @property
    def busy_rate(self) -> float:
        """Changes per run second of one busy container."""
        return self.busy_per_hour / 3600.0 * self.k

    @property
    def tail(self) -> float:
        """Run seconds left at the end for the last quiet changes to be found."""
        return 1.25 * self.max_staleness / self.k

    @property
    def busy_tail(self) -> float:
        """The same for busy changes: 1.3 expected round-robin cycles (status paced at 95% of
        the share below the reserve)."""
        pace = 0.95 * (1 - self.reserve) * self.rpm / 60
        return min(self.tail, 1.3 * self.containers / pace)


@dataclass(frozen=True)
class Change:
    offset: float
    container: str
    busy: bool
    delete: bool


class StampSink:
    """Records when each (type, relationship id) was published; accepts everything."""

    def __init__(self, name: str = "stamp") -> None:
        self.name = name
        self.seen: dict[tuple[str, str], float] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def publish(self, events: Sequence[Event]) -> None:
        now = time.time()
        for e in events:
            self.seen.setdefault((e.kind.value, e.subject), now)

    def healthy(self) -> bool:
        return True


@dataclass
class RunResult:
    policy: str
    busy_latency: list[float] = field(default_factory=list)
    quiet_latency: list[float] = field(default_factory=list)
    busy_latency_all: list[float] = field(default_factory=list)  # warm-up included
    undetected: int = 0
    quiet_worst_gap: float = 0.0
    median_gap: float = 0.0  # over all containers: the round-robin cycle
    quiet_median_gap: float = 0.0
    busy_median_gap: float = 0.0
    rate_limited: int = 0
    status_calls: int = 0
    sync_calls: int = 0
    loop_lag_max: float = 0.0


def container_ids(p: Params) -> list[str]:
    rng = random.Random(p.seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(p.containers)]


def make_schedule(p: Params, ids: Sequence[str]) -> tuple[list[Change], set[str]]:
    """The changes of one run (offsets in run seconds) and the busy containers."""
    rng = random.Random(p.seed + 1)
    busy = set(rng.sample(list(ids), max(1, round(p.containers * p.busy_share))))
    changes: list[Change] = []
    end = p.duration - p.tail
    busy_end = p.duration - p.busy_tail
    for cid in sorted(busy):
        t = rng.expovariate(p.busy_rate)
        while t < busy_end:
            changes.append(Change(t, cid, True, rng.random() < 0.3))
            t += rng.expovariate(p.busy_rate)
    quiet = sorted(set(ids) - busy)
    for _ in range(p.quiet_changes):
        changes.append(Change(rng.uniform(p.warmup, end), rng.choice(quiet), False, False))
    changes.sort(key=lambda c: c.offset)
    return changes, busy


def config_for(p: Params, url: str, ids: Sequence[str], db: Path, policy: str,
               rpm: int) -> Config:
    return Config.model_validate({
        "source": {"base_url": url, "timeout": "10s", "concurrency": 8,
                   "allow_insecure_http": True},
        "credentials": [{"name": "bench", "access_token": DEFAULT_ACCESS_TOKEN,
                         "requests_per_minute": rpm, "reserve": p.reserve}],
        "state": {"path": str(db)},
        "poll": {"interval": p.interval / p.k, "max_staleness": p.max_staleness / p.k,
                 "scheduler": policy},
        "subscriptions": [{"name": "bench", "credential": "bench", "container_ids": list(ids),
                           "emit_initial": False, "sinks": ["stamp"]}],
        "sinks": [{"name": "stamp", "type": "stdout"}],  # replaced by the StampSink
        "metrics": {"enabled": False},
        "shutdown_timeout": "5s",
    })


def simulator(p: Params, ids: Sequence[str], rpm: int) -> Simulator:
    return Simulator(SimulatorConfig(containers=list(ids), relationships=3, seed=p.seed,
                                     knobs=Knobs(rpm=rpm)))


async def bootstrap(p: Params, ids: Sequence[str], db: Path) -> float:
    """First sync of every container (no budget limit), leaving tokens in ``db``."""
    started = time.monotonic()
    async with simulator(p, ids, rpm=0) as sim:
        cfg = config_for(p, sim.url, ids, db, "round_robin", rpm=1_000_000)
        app = App(cfg, metrics=Metrics(CollectorRegistry(), runtime=False),
                  sink_overrides={"stamp": StampSink()})
        status = await app.run(once=True)
        if status != 0:
            raise SystemExit(f"bootstrap failed with status {status}")
    return time.monotonic() - started


def copy_db(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


async def run_policy(p: Params, policy: str, ids: Sequence[str], schedule: Sequence[Change],
                     busy: set[str], base_db: Path, workdir: Path) -> RunResult:
    db = workdir / f"{policy}.db"
    copy_db(base_db, db)
    res = RunResult(policy)
    async with simulator(p, ids, rpm=p.rpm) as sim:
        sink = StampSink()
        app = App(config_for(p, sim.url, ids, db, policy, p.rpm),
                  metrics=Metrics(CollectorRegistry(), runtime=False),
                  sink_overrides={"stamp": sink})
        task = asyncio.create_task(app.run())
        t0 = time.time()
        checks: dict[str, list[float]] = defaultdict(list)
        made: list[tuple[Change, str, str]] = []  # change, kind, relationship id
        lag = 0.0

        async def sample() -> None:
            nonlocal lag
            while True:
                before = time.monotonic()
                await asyncio.sleep(SAMPLE_EVERY)
                lag = max(lag, time.monotonic() - before - SAMPLE_EVERY)
                for sch in app.schedulers:
                    for cid, g in sch.groups.items():
                        seen = checks[cid]
                        if g.last_checked is not None and g.last_checked >= t0 and (
                                not seen or seen[-1] != g.last_checked):
                            seen.append(g.last_checked)

        sampler = asyncio.create_task(sample())
        for ch in schedule:
            delay = t0 + ch.offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if task.done():
                break
            if ch.delete:
                gone = sim.state.delete_random(ch.container, 1)
                if gone:
                    made.append((ch, "deleted", gone[0]))
                    continue
            made.append((ch, "created", sim.state.create_relationships(ch.container, 1)[0]))
        await asyncio.sleep(max(0.0, t0 + p.duration - time.time()))
        t_end = time.time()
        app.request_stop()
        await task
        sampler.cancel()
        res.loop_lag_max = lag
        res.rate_limited = sim.state.stats.rate_limited
        res.status_calls = sim.state.stats.requests.get("syncStatus", 0)
        res.sync_calls = sim.state.stats.requests.get("sync", 0)
        truth: dict[tuple[str, str], float] = {}
        for cid in {ch.container for ch, _, _ in made}:
            for c in sim.state.ground_truth(cid)["changes"]:
                truth[(c["kind"], c["id"])] = datetime.fromisoformat(c["at"]).timestamp()
    for ch, kind, rid in made:
        at = truth[(kind, rid)]
        published = sink.seen.get((kind, rid))
        if published is None:
            if ch.offset >= p.warmup:
                res.undetected += 1
            continue
        latency = published - at
        if ch.busy:
            res.busy_latency_all.append(latency)
        if ch.offset < p.warmup:
            continue
        (res.busy_latency if ch.busy else res.quiet_latency).append(latency)
    gaps_all: list[float] = []
    busy_gaps: list[float] = []
    quiet_gaps: list[float] = []
    warm = t0 + p.warmup
    for cid in ids:
        times = checks.get(cid, [])
        gaps = [b - a for a, b in itertools.pairwise(times) if b >= warm]
        gaps.append(t_end - (times[-1] if times else t0))  # still open at the end
        gaps_all.extend(gaps)
        if cid in busy:
            busy_gaps.extend(gaps)
        else:
            quiet_gaps.extend(gaps)
            res.quiet_worst_gap = max(res.quiet_worst_gap, *gaps)
    res.median_gap = statistics.median(gaps_all)
    res.quiet_median_gap = statistics.median(quiet_gaps)
    res.busy_median_gap = statistics.median(busy_gaps) if busy_gaps else math.nan
    return res


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def report(p: Params, rr: RunResult, ad: RunResult, boot: float) -> dict[str, Any]:
    k = p.k
    rows = [
        ("busy p50 latency", pct(rr.busy_latency, 50), pct(ad.busy_latency, 50)),
        ("busy p99 latency", pct(rr.busy_latency, 99), pct(ad.busy_latency, 99)),
        ("busy p50 incl. warm-up", pct(rr.busy_latency_all, 50), pct(ad.busy_latency_all, 50)),
        ("busy p99 incl. warm-up", pct(rr.busy_latency_all, 99), pct(ad.busy_latency_all, 99)),
        ("quiet p50 latency", pct(rr.quiet_latency, 50), pct(ad.quiet_latency, 50)),
        ("quiet p99 latency", pct(rr.quiet_latency, 99), pct(ad.quiet_latency, 99)),
        ("quiet max latency", pct(rr.quiet_latency, 100), pct(ad.quiet_latency, 100)),
        ("quiet worst check gap", rr.quiet_worst_gap, ad.quiet_worst_gap),
        ("median check gap (quiet)", rr.quiet_median_gap, ad.quiet_median_gap),
        ("median check gap (busy)", rr.busy_median_gap, ad.busy_median_gap),
    ]
    cycle = rr.median_gap
    print(f"\nfreshness: {p.containers} containers on one credential, "
          f"{round(p.containers * p.busy_share)} busy at {p.busy_per_hour:g} changes/h, "
          f"{p.quiet_changes} quiet changes; K={k:g} (rpm {p.rpm}, run {p.duration:g}s = "
          f"{p.duration * k / 60:.0f} min real, warm-up {p.warmup:g}s); "
          f"max_staleness {p.max_staleness:g}s real; bootstrap {boot:.1f}s")
    print(f"{'':26}{'round_robin':>24}{'adaptive':>24}")
    print(f"{'seconds (run | real)':26}{'run':>11}{'real':>13}{'run':>11}{'real':>13}")
    for name, a, b in rows:
        print(f"{name:26}{a:11.2f}{a * k:13.1f}{b:11.2f}{b * k:13.1f}")
    for name, a2, b2 in (
        ("busy changes measured", len(rr.busy_latency), len(ad.busy_latency)),
        ("quiet changes measured", len(rr.quiet_latency), len(ad.quiet_latency)),
        ("undetected at the end", rr.undetected, ad.undetected),
        ("HTTP 429 answers", rr.rate_limited, ad.rate_limited),
        ("syncStatus calls", rr.status_calls, ad.status_calls),
        ("sync calls", rr.sync_calls, ad.sync_calls),
    ):
        print(f"{name:26}{a2:24d}{b2:24d}")
    print(f"{'event loop lag max (s)':26}{rr.loop_lag_max:24.3f}{ad.loop_lag_max:24.3f}")
    ratio = pct(ad.busy_latency, 50) / pct(rr.busy_latency, 50)
    quiet_worst = max(ad.quiet_worst_gap, pct(ad.quiet_latency, 100))
    goals = {
        "busy_p50_ratio": ratio,
        "busy_p50_goal_met": ratio <= 0.2,
        "quiet_worst_over_rr_cycle": quiet_worst / cycle,
        "quiet_worst_goal_met": quiet_worst <= 2 * cycle,
        "zero_429": rr.rate_limited == 0 and ad.rate_limited == 0,
    }
    print(f"\nbusy p50 adaptive / round-robin = {ratio:.3f} (goal <= 0.2): "
          f"{'met' if goals['busy_p50_goal_met'] else 'MISSED'}")
    print(f"quiet worst case (adaptive, max of worst check gap and worst latency) = "
          f"{quiet_worst:.1f}s = {quiet_worst / cycle:.2f} round-robin cycles of {cycle:.1f}s "
          f"(goal <= 2): {'met' if goals['quiet_worst_goal_met'] else 'MISSED'}")
    print(f"429s: round_robin {rr.rate_limited}, adaptive {ad.rate_limited} (goal 0): "
          f"{'met' if goals['zero_429'] else 'MISSED'}")
    return {"params": asdict(p), "round_robin": summary(rr), "adaptive": summary(ad),
            "goals": goals}


def summary(r: RunResult) -> dict[str, Any]:
    return {
        "busy_p50": pct(r.busy_latency, 50), "busy_p99": pct(r.busy_latency, 99),
        "quiet_p50": pct(r.quiet_latency, 50), "quiet_p99": pct(r.quiet_latency, 99),
        "quiet_max": pct(r.quiet_latency, 100), "quiet_worst_gap": r.quiet_worst_gap,
        "median_gap": r.median_gap, "quiet_median_gap": r.quiet_median_gap,
        "busy_median_gap": r.busy_median_gap,
        "busy_n": len(r.busy_latency), "quiet_n": len(r.quiet_latency),
        "undetected": r.undetected, "rate_limited": r.rate_limited,
        "status_calls": r.status_calls, "sync_calls": r.sync_calls,
    }


async def main_async(p: Params, json_out: Path | None) -> int:
    ids = container_ids(p)
    schedule, busy = make_schedule(p, ids)
    with tempfile.TemporaryDirectory(prefix="freshness-") as tmp:
        workdir = Path(tmp)
        base = workdir / "bootstrap.db"
        boot = await bootstrap(p, ids, base)
        print(f"bootstrapped {len(ids)} containers in {boot:.1f}s; "
              f"{len(schedule)} changes per run", file=sys.stderr)
        results = []
        for policy in ("round_robin", "adaptive"):
            print(f"running {policy} for {p.duration:g}s ...", file=sys.stderr)
            results.append(await run_policy(p, policy, ids, schedule, busy, base, workdir))
    out = report(p, results[0], results[1], boot)
    if json_out is not None:
        await asyncio.to_thread(json_out.write_text, json.dumps(out, indent=2) + "\n",
                                encoding="utf-8")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> tuple[Params, Path | None]:
    d = Params()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=d.containers)
    ap.add_argument("--busy-share", type=float, default=d.busy_share)
    ap.add_argument("--busy-per-hour", type=float, default=d.busy_per_hour,
                    help="real-time changes per hour of one busy container (Poisson)")
    ap.add_argument("--quiet-changes", type=int, default=d.quiet_changes)
    ap.add_argument("-k", "--k", type=float, default=d.k, help="time compression factor")
    ap.add_argument("--duration", type=float, default=d.duration, help="run seconds per policy")
    ap.add_argument("--warmup", type=float, default=d.warmup)
    ap.add_argument("--interval", type=float, default=d.interval, help="real poll.interval")
    ap.add_argument("--max-staleness", type=float, default=d.max_staleness,
                    help="real poll.max_staleness")
    ap.add_argument("--reserve", type=float, default=d.reserve)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--log-level", default="WARNING")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = Params(a.containers, a.busy_share, a.busy_per_hour, a.quiet_changes, a.k, a.duration,
               a.warmup, a.interval, a.max_staleness, a.reserve, a.seed)
    if p.duration - max(p.tail, p.busy_tail) <= p.warmup:
        ap.error(f"--duration must exceed --warmup + {p.tail:.0f}s (time to find late changes)")
    return p, a.json


def main(argv: Sequence[str] | None = None) -> int:
    p, json_out = parse_args(argv)
    return asyncio.run(main_async(p, json_out))


if __name__ == "__main__":
    sys.exit(main())
