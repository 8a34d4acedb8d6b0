"""The webhook outbox under failure, against the real receiver and a real SQLite outbox: one
transaction per failed batch, dead-letter replay that never reorders a relationship, and the
retries brought forward when a failing endpoint answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from notifier.metrics import Metrics
from notifier.simulator import Simulator
from notifier.state.sqlite import SqliteStateStore
from tests.integration.main_job_support import (
    base_config,
    check_stream_invariants,
    sim_config,
    start_notifier,
    stop_process,
    wait_for,
    write_config,
)
from tests.integration.test_webhook_sink import (
    FAST,
    SECRET,
    SINK,
    _dead,
    _pending,
    assert_per_key_order,
    fill,
    make_cfg,
    make_items,
    no_traceback,
    nonempty,
    sink_for,
    truth,
    wait_until,
)
from tests.integration.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(90)

CREATED = "com.autodesk.bim360.relationship.created"
DELETED = "com.autodesk.bim360.relationship.deleted"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    async with SqliteStateStore(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


class Commits:
    """Counts the committed transactions that rescheduled or dead-lettered outbox rows (from
    SQLite's statement trace of the store's connection)."""

    def __init__(self) -> None:
        self.count = 0
        self._settling = False

    def __call__(self, statement: str) -> None:
        sql = " ".join(statement.split()).upper()
        if sql.startswith("BEGIN"):
            self._settling = False
        elif sql.startswith("UPDATE OUTBOX SET NEXT_ATTEMPT_AT") or sql.startswith(
                "UPDATE OUTBOX SET STATUS = 'DEAD'"):
            self._settling = True
        elif sql == "COMMIT" and self._settling:
            self.count += 1
            self._settling = False

    async def attach(self, store: SqliteStateStore) -> None:
        def install() -> None:
            assert store._conn is not None
            store._conn.set_trace_callback(self)

        await store._submit(install)


async def test_a_failed_batch_is_rescheduled_in_one_transaction(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "fail"
    items = make_items(40, deleted_every=0)
    cfg = make_cfg(receiver.url, mode="batch", batch_max=40, max_concurrency=1,
                   retry_schedule=[60.0], circuit_breaker={"failure_threshold": 100,
                                                           "reset_after": 0.1})
    await fill(store, items)
    commits = Commits()
    await commits.attach(store)
    async with sink_for(cfg, store, metrics, stats_interval=3600) as sink:
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.calls) >= 1)
        await wait_until(lambda: _retried(store, len(items)))
    assert len(receiver.calls) == 1
    assert commits.count == 1  # not one per row (40 fsyncs)

    # And a batch that runs out of retries is dead-lettered in one transaction too.
    await store.outbox_bring_forward(SINK, time.time())
    commits.count = 0
    async with sink_for(cfg, store, metrics, stats_interval=3600) as sink:
        sink.notify()
        await wait_until(lambda: _dead(store, len(items)))
    assert commits.count == 1


async def _retried(store: SqliteStateStore, n: int) -> bool:
    rows = await store.outbox_fetch_due(SINK, time.time() + 3600, 1000)
    return sum(r.attempts == 1 for r in rows) == n


async def test_replay_never_delivers_a_created_event_after_its_deleted_one(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    created = make_items(2, deleted_every=0)  # rel-0, rel-1 created
    deleted = make_items(2, deleted_every=1)[2:]  # both deleted
    assert [i.ordering_key for i in deleted] == [i.ordering_key for i in created]
    cfg = make_cfg(receiver.url, retry_schedule=[], circuit_breaker={
        "failure_threshold": 100, "reset_after": 0.1})
    async with sink_for(cfg, store, metrics) as sink:
        receiver.mode = "fail"
        await fill(store, created)
        sink.notify()
        await wait_until(lambda: _dead(store, 2))  # both created events dead
        receiver.mode = "ok"
        await fill(store, deleted[:1], token="t2")  # rel-0 deleted: delivered
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= 1)
        await wait_until(lambda: _pending(store, 0))
        # rel-0's created event would now arrive after its deleted one: it stays dead.
        # rel-1's has nothing after it: it goes out, and its deletion after it.
        assert await store.dlq_replay(sink=SINK) == 1
        await fill(store, deleted[1:], token="t3")
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= 3)
        await wait_until(lambda: _pending(store, 0))
    got = [(e["type"], e["subject"]) for e in receiver.events]
    rel0, rel1 = (i.ordering_key for i in created)
    assert got == [(DELETED, rel0), (CREATED, rel1), (DELETED, rel1)]
    (kept,) = await store.dlq_list(sink=SINK)
    assert (kept.ordering_key, kept.event_id) == (rel0, created[0].event_id)


async def test_a_recovered_endpoint_gets_its_waiting_retries_at_once_in_order(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    items = make_items(10, deleted_every=2)  # 10 created, then 5 deleted behind them
    late = make_items(11, deleted_every=0)[10:]  # another relationship, after the outage
    # The schedule's first wait is long: without recovery the retries would wait a minute.
    cfg: dict[str, Any] = {"retry_schedule": [60.0] * 3, "rate_per_second": 20.0,
                           "circuit_breaker": {"failure_threshold": 100, "reset_after": FAST}}
    receiver.mode = "fail"
    async with sink_for(make_cfg(receiver.url, **cfg), store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await wait_until(lambda: _retried(store, 10))
        failed_calls = len(receiver.calls)
        assert failed_calls == 10  # each relationship's first event, once
        receiver.mode = "ok"
        recovered_at = time.monotonic()
        await fill(store, late, token="t2")
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items) + 1, within=20)
        took = time.monotonic() - recovered_at
        await wait_until(lambda: _pending(store, 0))
    assert took < 20  # not the 54 s or more of the schedule's first step
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in [*items, *late])
    assert_per_key_order(receiver, items)
    # Brought forward, the retries still respect the endpoint's rate limit (20 per second).
    starts = sorted(c.at for c in receiver.calls[failed_calls:])
    assert starts[-1] - starts[0] >= (len(starts) - 1) / 20.0 * 0.8


async def test_a_full_outbox_holds_polling_back_and_loses_nothing(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    container = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
    subs = [{"name": "s", "credential": "sim", "container_id": container, "sinks": [SINK]}]
    hooks = {"name": SINK, "type": "webhook", "url": receiver.url, "secret": SECRET,
             "allow_insecure_http": True, "retry_schedule": ["50ms"] * 200, "max_pending": 8,
             "circuit_breaker": {"failure_threshold": 3, "reset_after": "200ms"}}
    log = tmp_path / "notifier.log"
    await receiver.down()
    async with Simulator(sim_config([container], relationships=200, page_size=5)) as sim:
        config = write_config(tmp_path, base_config(tmp_path, sim.url, subs, sinks=[hooks]))
        proc = await start_notifier(config, log=log)
        try:
            await wait_for(lambda: "outbox full" in log.read_text(), 30, "the outbox to fill")
            await asyncio.sleep(1.0)  # polling goes on trying, and stays held back
            async with SqliteStateStore(tmp_path / "state.db") as store:
                # Pages are admitted while below the cap: one batch of pages (at most 10
                # pages of 5) may overshoot it, no more.
                assert 8 <= (await store.outbox_stats(SINK)).pending_count <= 8 + 50
            await receiver.up()
            await receiver.wait_for(lambda: len(receiver.events) >= 200, within=60)
        finally:
            assert await stop_process(proc) == 0
    assert len(set(receiver.event_ids())) == 200
    check_stream_invariants(receiver.events)
    assert nonempty({("s", container): {e["subject"] for e in receiver.events}}) == nonempty(
        truth(sim, subs))
    no_traceback(log)
