"""The webhook outbox in the SQLite store: order per key, retries, dead letters, redelivery."""

from __future__ import annotations

from pathlib import Path

from notifier.state.base import OutboxItem
from notifier.state.sqlite import SqliteStateStore

SUB, CONT = "project-a", "c1"


def _item(event_id: str, key: str, created_at: float, sink: str = "hook") -> OutboxItem:
    return OutboxItem(sink, event_id, key, f'{{"id":"{event_id}"}}'.encode(),
                      "2024-05-01T00:00:00Z", created_at)


async def _queue(store: SqliteStateStore, items: list[OutboxItem], now: float = 0.0) -> None:
    await store.commit_page(SUB, CONT, next_token="t", resync_cursor=None, in_resync=False,
                            add_ids=(), remove_ids=(), outbox=items, changed=True, now=now)


async def _drain(store: SqliteStateStore, sink: str, now: float) -> list[str]:
    """Deliver everything deliverable, the way a dispatcher would; the delivery order."""
    order: list[str] = []
    while rows := await store.outbox_fetch_due(sink, now, 3):
        order.extend(r.event_id for r in rows)
        await store.outbox_mark_delivered([r.row_id for r in rows], now)
    return order


async def test_fetch_due_keeps_each_key_in_order(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await _queue(store, [_item("a1", "A", 1), _item("b1", "B", 1), _item("a2", "A", 2)])
        await _queue(store, [_item("c1", "C", 3), _item("a3", "A", 3), _item("b2", "B", 3),
                             _item("x1", "A", 3, sink="other")])
        rows = await store.outbox_fetch_due("hook", 10.0, 100)
        assert [r.event_id for r in rows] == ["a1", "b1", "c1"]  # one head per key
        assert rows[0].payload == b'{"id":"a1"}'
        assert (rows[0].status, rows[0].attempts, rows[0].ordering_key) == ("pending", 0, "A")
        assert [r.event_id for r in await store.outbox_fetch_due("hook", 10.0, 2)] == [
            "a1", "b1"]
        # Only what is due: the rows are due from their created_at.
        assert [r.event_id for r in await store.outbox_fetch_due("hook", 1.5, 10)] == [
            "a1", "b1"]
        assert await _drain(store, "hook", 10.0) == ["a1", "b1", "c1", "a2", "b2", "a3"]
        assert await store.outbox_stats("hook") == (0, None, 0)
        assert await store.outbox_stats("other") == (1, 3.0, 0)


async def test_a_rescheduled_head_blocks_its_key_only(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await _queue(store, [_item("a1", "A", 1), _item("a2", "A", 2), _item("b1", "B", 3)])
        head = (await store.outbox_fetch_due("hook", 10.0, 10))[0]
        await store.outbox_reschedule(head.row_id, 100.0, 1, "HTTP 503")
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        assert [r.event_id for r in rows] == ["b1"]  # a2 waits behind a1
        assert await store.outbox_stats("hook") == (3, 1.0, 0)
        rows = await store.outbox_fetch_due("hook", 100.0, 10)
        assert (rows[0].event_id, rows[0].attempts, rows[0].last_error) == ("a1", 1, "HTTP 503")


async def test_dead_letters_list_replay_and_unblock(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await _queue(store, [_item("a1", "A", 1), _item("a2", "A", 2), _item("b1", "B", 3),
                             _item("z1", "Z", 3, sink="other")])
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        await store.outbox_dead_letter(rows[0].row_id, "gave up after 8 attempts", 20.0)
        await store.outbox_dead_letter(rows[1].row_id, "HTTP 400", 21.0)
        other = await store.outbox_fetch_due("other", 10.0, 10)
        await store.outbox_dead_letter(other[0].row_id, "HTTP 410", 22.0)
        # A dead head no longer holds back the next event of its key.
        assert [r.event_id for r in await store.outbox_fetch_due("hook", 30.0, 10)] == ["a2"]
        assert await store.outbox_stats("hook") == (1, 2.0, 2)

        dead = await store.dlq_list("hook")
        assert [(d.event_id, d.status, d.dead_reason, d.dead_at) for d in dead] == [
            ("a1", "dead", "gave up after 8 attempts", 20.0), ("b1", "dead", "HTTP 400", 21.0)]
        assert [d.event_id for d in await store.dlq_list()] == ["a1", "b1", "z1"]
        assert [d.event_id for d in await store.dlq_list(since=2.0)] == ["b1", "z1"]
        assert [d.event_id for d in await store.dlq_list(until=3.0)] == ["a1"]
        assert [d.event_id for d in await store.dlq_list(limit=1)] == ["a1"]

        assert await store.dlq_replay("hook", since=3.0) == 1  # b1 only
        assert await store.dlq_replay("hook", since=3.0) == 0
        assert [d.event_id for d in await store.dlq_list("hook")] == ["a1"]
        assert await store.dlq_replay() == 2  # a1 and z1
        assert await store.outbox_stats("hook") == (3, 1.0, 0)
        # Replayed rows keep their place: a1 goes before a2 again, attempts start over.
        rows = await store.outbox_fetch_due("hook", 30.0, 10)
        assert [(r.event_id, r.attempts, r.dead_reason) for r in rows] == [
            ("a1", 0, None), ("b1", 0, None)]
        assert await _drain(store, "hook", 30.0) == ["a1", "b1", "a2"]


async def test_redeliver_requeues_delivered_events_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await _queue(store, [_item(f"e{i}", f"K{i % 2}", float(i)) for i in range(6)])
        assert await _drain(store, "hook", 100.0) == [f"e{i}" for i in range(6)]
        assert await store.redeliver("hook", 2.0, 5.0, now=200.0) == 3
        # Redelivering again copies the originals only, never the copies.
        assert await store.redeliver("hook", 2.0, 5.0, now=200.0) == 3
        assert await store.redeliver("other", 0.0, 10.0, now=200.0) == 0
    async with SqliteStateStore(path) as store:  # durable
        assert await store.outbox_stats("hook") == (6, 2.0, 0)
        rows = await store.outbox_fetch_due("hook", 300.0, 100)
        assert [(r.event_id, r.attempts) for r in rows] == [("e2", 0), ("e3", 0)]
        order = await _drain(store, "hook", 300.0)
        assert sorted(order) == ["e2", "e2", "e3", "e3", "e4", "e4"]
        k0 = [e for e in order if e in ("e2", "e4")]
        assert k0 == ["e2", "e4", "e2", "e4"]  # copies keep their key's order
        # Retention: delivered rows go once old enough.
        assert await store.outbox_purge_delivered("other", before=1_000.0) == 0  # not its rows
        assert await store.outbox_purge_delivered("hook", before=150.0) == 6
        assert await store.outbox_purge_delivered("hook", before=1_000.0) == 6
        assert await store.redeliver("hook", 0.0, 10.0, now=400.0) == 0


async def test_outbox_rows_commit_with_the_checkpoint_and_outlive_the_stream(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await _queue(store, [_item("a1", "A", 1)], now=5.0)
        await store.forget_stream(SUB, CONT)
    async with SqliteStateStore(path) as store:
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        assert [r.event_id for r in rows] == ["a1"]
        await store.outbox_mark_delivered([rows[0].row_id], 11.0)
        await store.outbox_mark_delivered([], 11.0)
        # Marking a row twice, or rescheduling a delivered one, changes nothing.
        await store.outbox_reschedule(rows[0].row_id, 50.0, 3, "late")
        await store.outbox_dead_letter(rows[0].row_id, "late", 12.0)
        assert await store.outbox_stats("hook") == (0, None, 0)
        assert await store.dlq_list() == []
