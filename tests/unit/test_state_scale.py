"""A stream with 1,000,000 known ids: an overwrite diff stays within bounded memory.

About 8 s on an idle machine and several times that on a busy one: marked slow (``make
test-long``). The scenario runs in a fresh Python process so that its peak
RSS is its own, not whatever earlier tests left behind.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from notifier.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[2]
KNOWN = 1_000_000
BATCH = 100_000
SUB, CONT = "big", "container"


def _rel(i: int) -> str:
    return f"rel-{i:07d}"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def scenario(path: str) -> dict[str, Any]:
    """Fill one stream with KNOWN ids, resync it against a snapshot lacking every 100th id
    plus some new ones, and reconcile; returns what happened and what it cost."""
    baseline = _peak_rss_mib()
    started = time.monotonic()
    async with SqliteStateStore(path) as store:
        for start in range(0, KNOWN, BATCH):
            await store.commit_page(
                SUB, CONT, next_token="t0", resync_cursor=None, in_resync=False,
                add_ids=[_rel(i) for i in range(start, start + BATCH)], remove_ids=(),
                changed=True, now=1.0,
            )
        filled = time.monotonic()
        await store.begin_resync(SUB, CONT)
        for start in range(0, KNOWN + 5_000, BATCH):
            page = [_rel(i) for i in range(start, min(start + BATCH, KNOWN + 5_000)) if i % 100]
            new = set(page) - await store.known_subset(SUB, CONT, page)
            await store.commit_page(
                SUB, CONT, next_token=None, resync_cursor=f"c{start}", in_resync=True,
                add_ids=sorted(new), remove_ids=(), seen_ids=page, changed=bool(new), now=2.0,
            )
        drained = time.monotonic()
        tracemalloc.start()
        missing = 0
        all_expected = True
        async for batch in store.iter_resync_missing(SUB, CONT, batch=10_000):
            ids = [k.rel_id for k in batch]
            missing += len(ids)
            all_expected &= all(int(r[4:]) % 100 == 0 and int(r[4:]) < KNOWN for r in ids)
            await store.commit_page(
                SUB, CONT, next_token=None, resync_cursor="final", in_resync=True,
                add_ids=(), remove_ids=ids, changed=True, now=3.0,
            )
        await store.finish_resync(SUB, CONT, next_token="t1", changed=True, now=4.0)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        spot = await store.known_subset(SUB, CONT, [_rel(0), _rel(1), _rel(KNOWN + 1)])
    return {
        "missing": missing,
        "all_expected": all_expected,
        "known_count": state.known_count,
        "in_resync": state.in_resync,
        "spot": sorted(spot),
        "rss_growth_mib": _peak_rss_mib() - baseline,
        "rss_peak_mib": _peak_rss_mib(),
        "diff_traced_peak_mib": traced_peak / 2**20,
        "seconds": {"fill": filled - started, "drain": drained - filled,
                    "diff": time.monotonic() - drained},
    }


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_million_known_ids_reconcile_in_bounded_memory(tmp_path: Path) -> None:
    code = (
        "import asyncio, json, sys\n"
        "from tests.unit.test_state_scale import scenario\n"
        "print(json.dumps(asyncio.run(scenario(sys.argv[1]))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)
    assert out["missing"] == KNOWN // 100
    assert out["all_expected"]
    assert out["known_count"] == KNOWN - KNOWN // 100 + 5_000 - 5_000 // 100
    assert not out["in_resync"]
    assert out["spot"] == [_rel(1), _rel(KNOWN + 1)]
    # 1M ids as Python strings would take ~70 MiB; the diff never holds more than a batch.
    assert out["diff_traced_peak_mib"] < 20
    assert out["rss_growth_mib"] < 150
    assert out["rss_peak_mib"] < 300
