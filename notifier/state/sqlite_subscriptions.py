"""Synchronous SQL for whole subscriptions: orphan retention, explicit forget and rename.

A subscription missing from the configuration may come back (a rename being rolled out, a
config briefly incomplete): its streams are marked orphaned rather than dropped, and dropped
only once the orphan retention has passed. These run on the store's worker thread only.
"""

from __future__ import annotations

import sqlite3

from notifier.errors import StateError
from notifier.state import sqlite_checks as checks
from notifier.state.base import PruneResult, StreamKey
from notifier.state.sqlite_streams import StreamIds
from notifier.state.sqlite_tx import transaction


def prune_streams(
    conn: sqlite3.Connection, ids: StreamIds, keep: set[StreamKey], now: float,
    retention: float, subscriptions: set[str] | None = None,
) -> PruneResult:
    orphaned: list[StreamKey] = []
    kept: list[StreamKey] = []
    dropped: list[StreamKey] = []
    with transaction(conn):
        rows = conn.execute(
            "SELECT stream_id, subscription, container_id, orphaned_at FROM streams"
        ).fetchall()
        back: list[int] = []
        marks: list[int] = []
        gone: list[int] = []
        for sid, sub, cont, since in rows:
            key = (str(sub), str(cont))
            if subscriptions is not None and key[0] not in subscriptions:
                continue
            if key in keep:
                if since is not None:
                    back.append(sid)
            elif since is None:
                marks.append(sid)
                orphaned.append(key)
                kept.append(key)
            elif now - float(since) >= retention:
                gone.append(sid)
                dropped.append(key)
            else:
                kept.append(key)
        conn.executemany("UPDATE streams SET orphaned_at = NULL WHERE stream_id = ?",
                         ((sid,) for sid in back))
        conn.executemany("UPDATE streams SET orphaned_at = ? WHERE stream_id = ?",
                         ((now, sid) for sid in marks))
        checks.fold_containers(conn, [cid for _, cid in dropped])
        conn.executemany("DELETE FROM streams WHERE stream_id = ?", ((sid,) for sid in gone))
    for key in dropped:
        ids.drop(key)
    for sid in gone:
        ids.staging.drop(sid)
    return PruneResult(orphaned, kept, dropped)


def forget_subscription(conn: sqlite3.Connection, ids: StreamIds, subscription: str) -> int:
    with transaction(conn):
        checks.fold_subscription(conn, subscription)
        rows = conn.execute("DELETE FROM streams WHERE subscription = ? RETURNING stream_id",
                            (subscription,)).fetchall()
    ids.clear()
    for (sid,) in rows:
        ids.staging.drop(int(sid))
    return len(rows)


def rename_subscription(conn: sqlite3.Connection, ids: StreamIds, old: str, new: str) -> int:
    with transaction(conn):
        taken = conn.execute(
            "SELECT count(*) FROM streams WHERE subscription = ?", (new,)
        ).fetchone()[0]
        if taken:
            raise StateError(
                f"subscription {new!r} already has state for {taken} container(s): forget it "
                "first (notifier state forget) or pick another name"
            )
        checks.fold_subscription(conn, old)
        cur = conn.execute(
            "UPDATE streams SET subscription = ?, orphaned_at = NULL WHERE subscription = ?",
            (new, old),
        )
    ids.clear()
    return cur.rowcount
