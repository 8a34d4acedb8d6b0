"""SIGKILL a process that is committing checkpoints: every acknowledged checkpoint survives, and
no checkpoint is ever half applied (token, known ids, counts and outbox rows agree)."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from notifier.state.base import OutboxItem
from notifier.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[2]
SUB, CONT = "crashy", "c1"
PER_PAGE, REMOVED = 50, 10


def _page_ids(n: int) -> list[str]:
    return [f"r{n:05d}-{j:02d}" for j in range(PER_PAGE)]


async def child(path: str) -> None:
    """Commit page after page forever, resuming after the last stored one; print each page
    number once its commit has returned (the acknowledgement)."""
    async with SqliteStateStore(path) as store:
        state = await store.get_stream(SUB, CONT)
        n = 0 if state is None or state.sync_token is None else int(state.sync_token[1:]) + 1
        while True:
            adds = _page_ids(n)
            removes = _page_ids(n - 1)[:REMOVED] if n else []
            items = [OutboxItem("hook", f"ev-{r}", r, b"{}" * 200, "2024-01-01T00:00:00Z",
                                float(n)) for r in adds]
            await store.commit_page(SUB, CONT, next_token=f"t{n}", resync_cursor=None,
                                    in_resync=False, add_ids=adds, remove_ids=removes,
                                    outbox=items, changed=True, now=float(n))
            print(n, flush=True)
            n += 1


def _expected_known(last: int) -> set[str]:
    known: set[str] = set()
    for n in range(last + 1):
        known.update(_page_ids(n))
        if n:
            known.difference_update(_page_ids(n - 1)[:REMOVED])
    return known


def _run_and_kill(path: Path, acks_wanted: int) -> int:
    code = (
        "import asyncio, sys\n"
        "from tests.integration.test_state_sqlite import child\n"
        "asyncio.run(child(sys.argv[1]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    last = -1
    try:
        for _ in range(acks_wanted):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child died"
            last = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return last


async def test_sigkill_never_loses_or_tears_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state" / "crash.db"
    rng = random.Random(7)
    acked = -1
    for _ in range(5):
        acked = max(acked, _run_and_kill(path, rng.randint(5, 60)))
        async with SqliteStateStore(path) as store:
            state = await store.get_stream(SUB, CONT)
            assert state is not None
            assert state.sync_token is not None
            stored = int(state.sync_token[1:])
            assert stored >= acked  # nothing acknowledged is lost
            assert state.last_changed_at == float(stored)
            assert state.known_count == len(_expected_known(stored))
            pending, _, _ = await store.outbox_stats("hook")
            assert pending == PER_PAGE * (stored + 1)
        conn = sqlite3.connect(path)
        try:
            known = {r for (r,) in conn.execute("SELECT rel_id FROM known")}
            events = [e for (e,) in conn.execute("SELECT event_id FROM outbox ORDER BY row_id")]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        assert known == _expected_known(stored)  # exactly the pages up to the token
        assert events == [f"ev-{r}" for n in range(stored + 1) for r in _page_ids(n)]
        acked = stored
