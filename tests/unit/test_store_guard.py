"""StoreGuard: a failing state store pauses work with a growing backoff, shows in /readyz and
the metrics, and clears at the first committed write. The store tells it, from real SQLite
errors (a write lock held by another connection, a database at its size limit)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from notifier.errors import StateError
from notifier.metrics import Metrics
from notifier.server import HealthState
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_base import error_kind
from notifier.store_guard import StoreGuard


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_failures_pause_longer_each_time_up_to_the_cap_and_a_write_clears_them(
    metrics: Metrics,
) -> None:
    clock, health = Clock(), HealthState(required=["store"])
    health.store_open()
    guard = StoreGuard(metrics.store, health, initial=1.0, maximum=30.0, now=clock)
    assert guard.pause_left() == 0
    assert not guard.failing
    pauses = []
    for _ in range(7):  # each failure a retry after the pause before it
        guard.store_failed(StateError("locked", kind="busy"))
        pauses.append(guard.pause_left())
        clock.t += guard.pause_left()
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    guard.store_failed(StateError("locked", kind="busy"))
    clock.t += 10
    assert guard.pause_left() == 20.0
    # Work under way when that pause began fails too: counted, but the pause does not grow.
    guard.store_failed(StateError("locked", kind="busy"))
    assert guard.pause_left() == 20.0
    assert guard.failing
    assert health.not_ready() == {"store": "state store failing (busy)"}
    assert value(metrics, "notifier_state_store_up") == 0
    assert value(metrics, "notifier_state_store_errors_total", kind="busy") == 9
    guard.store_wrote()
    assert guard.pause_left() == 0
    assert not guard.failing
    assert health.ready
    assert value(metrics, "notifier_state_store_up") == 1
    guard.store_failed(StateError("disk full", kind="full"))  # the backoff starts over
    assert guard.pause_left() == 1.0
    assert value(metrics, "notifier_state_store_errors_total", kind="full") == 1


async def test_run_waits_out_the_pause_and_reports_a_failure_without_raising(
    metrics: Metrics,
) -> None:
    guard = StoreGuard(metrics.store, initial=0.05, maximum=0.05)
    stop = asyncio.Event()
    ran: list[str] = []

    async def work(what: str) -> None:
        ran.append(what)
        if what == "fails":
            raise StateError("locked", kind="busy")

    assert await guard.run(stop, work, "ok")
    assert not await guard.run(stop, work, "fails")  # a StateError is not raised
    guard.store_failed(StateError("locked", kind="busy"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await guard.run(stop, work, "after the pause")
    assert loop.time() - started >= 0.04
    guard.store_failed(StateError("locked", kind="busy"))
    stop.set()
    assert not await guard.run(stop, work, "never")  # a stop ends the pause, work not run
    assert ran == ["ok", "fails", "after the pause"]


async def test_a_held_write_lock_fails_writes_as_busy_and_the_release_recovers(
    tmp_path: Path, metrics: Metrics,
) -> None:
    health = HealthState(required=["store"])
    guard = StoreGuard(metrics.store, health)
    path = tmp_path / "state.db"
    async with SqliteStateStore(path, busy_timeout=0.1, observer=guard) as store:
        health.store_open()
        await store.save_refresh_token("main", "seed", "token-1")
        assert not guard.failing
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")  # another process's write lock
            with pytest.raises(StateError) as caught:
                await store.save_refresh_token("main", "seed", "token-2")
            assert caught.value.kind == "busy"
            assert guard.failing
            assert value(metrics, "notifier_state_store_errors_total", kind="busy") == 1
            assert not health.ready
            # Reads still work (WAL) but say nothing about writes: still failing.
            assert await store.load_refresh_token("main", "seed") == "token-1"
            assert guard.failing
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await store.save_refresh_token("main", "seed", "token-2")
        assert not guard.failing
        assert health.ready
        assert value(metrics, "notifier_state_store_up") == 1
        assert await store.load_refresh_token("main", "seed") == "token-2"


def test_error_kinds_come_from_sqlites_result_codes(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "small.db", isolation_level=None)
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute("PRAGMA max_page_count = 3")  # the database may not grow: a full disk
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert error_kind(full.value) == "full"
    other = sqlite3.connect(tmp_path / "small.db", isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("INSERT INTO t VALUES (1)")
    assert error_kind(busy.value) == "busy"
    conn.execute("ROLLBACK")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEKT 1")
    assert error_kind(syntax.value) == "other"
    conn.close()
    other.close()
