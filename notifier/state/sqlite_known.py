"""Synchronous SQL for known ids, checkpoints, resync staging and announcements.

These functions run only on the store's worker thread; ``SqliteStateStore`` is their async face.
Ids are stored as keys (``sqlite_keys``: 16 bytes for a UUID). The known set is a rowid table
(rows, bodies included, appended in insertion order) keyed by (stream, id): only that key's
compact index is written at random places, and membership queries read only it. A resync's
staging set is held in memory and written in bulk (``sqlite_keys.Staging``); nothing
proportional to a stream's known set is ever loaded. Announcements are written one row per
page and settled by the page's checkpoint (``sqlite_announced``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from notifier.state.base import Announcement, KnownRelationship, OutboxItem, StreamKey
from notifier.state.sqlite_announced import (
    has_pages,
    insert_page,
    page_announcements,
    settle_pages,
)
from notifier.state.sqlite_keys import (
    IdTable,
    RelKey,
    delete_keys,
    insert_rows,
    keyed,
    present,
    rel_id,
    rel_key,
    rel_keys,
    rows_of,
)
from notifier.state.sqlite_outbox import insert_items
from notifier.state.sqlite_streams import StreamIds
from notifier.state.sqlite_tx import transaction


def known_subset(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey,
                 rel_ids: Sequence[str]) -> set[str]:
    sid = ids.find(conn, key)
    if sid is None or not rel_ids:
        return set()
    held = ids.staging.known_held(sid)
    if held is not None:  # a bootstrap that has written nothing yet: no lookup
        return {r for r, k in zip(rel_ids, rel_keys(rel_ids), strict=True) if k in held}
    by_key = keyed(rel_ids)
    return {by_key[k] for k in present(conn, "known", sid, list(by_key))}


def known_bodies(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey,
                 rel_ids: Sequence[str]) -> dict[str, bytes]:
    sid = ids.find(conn, key)
    if sid is None or not rel_ids:
        return {}
    by_key = keyed(rel_ids)
    rows = rows_of(conn, "known", sid, list(by_key), "rel_id, body", " AND body IS NOT NULL")
    return {by_key[k]: bytes(body) for k, body in rows}


def resync_seen_subset(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey,
                       rel_ids: Sequence[str]) -> set[str]:
    """Which of ``rel_ids`` the resync listed: held in memory, or written."""
    sid = ids.find(conn, key)
    if sid is None or not rel_ids:
        return set()
    every = ids.staging.all_held(sid)
    if every is not None:  # nothing written yet: the held ids are all it listed
        return {r for r, k in zip(rel_ids, rel_keys(rel_ids), strict=True) if k in every}
    listed = ids.staging.listed(sid)
    if listed is not None:  # only ids it may hold can have been listed
        rel_ids = listed.maybe_listed(rel_ids)
        if not rel_ids:
            return set()
    by_key = keyed(rel_ids)
    held = ids.staging.get(sid) or set()
    out = {rid for k, rid in by_key.items() if k in held}
    rest = [k for k in by_key if k not in held]
    out.update(by_key[k] for k in present(conn, "resync_seen", sid, rest))
    return out


def commit_page(
    conn: sqlite3.Connection,
    ids: StreamIds,
    key: StreamKey,
    *,
    next_token: str | None,
    resync_cursor: str | None,
    in_resync: bool,
    add_ids: Sequence[str],
    remove_ids: Sequence[str],
    seen_ids: Sequence[str],
    outbox: Sequence[OutboxItem],
    bodies: Mapping[str, bytes],
    filter_fingerprint: str | None,
    listed_under: str | None,
    changed: bool,
    now: float,
    snapshot_ends: bool = False,
) -> None:
    """Apply one checkpoint in one transaction; see SqliteStateStore.commit_page."""
    staging = ids.staging
    seen = rel_keys(seen_ids)
    gone = rel_keys(remove_ids)
    new = rel_keys(add_ids)
    # Serialised (``bodies`` may serialise lazily) before the write transaction opens.
    added_bodies = [bodies.get(r) for r in add_ids]
    flush: set[RelKey] | None = None
    with transaction(conn):
        sid = ids.ensure(conn, key)
        removed = added = 0
        if gone:
            removed = delete_keys(conn, "known", sid, gone)
        if new:
            size, first = ids.chunk_rows, _next_chunk(conn, sid, ids.chunk_rows)
            added = insert_rows(
                conn, "INSERT OR IGNORE INTO known (stream_id, rel_id, body, filter_fingerprint,"
                " chunk) VALUES",
                [(sid, k, body, listed_under, None if size is None else first + i // size)
                 for i, (k, body) in enumerate(zip(new, added_bodies, strict=True))])
        staged: tuple[str | None] | tuple[()] = ()
        if in_resync:
            held = staging.get(sid)
            if held is None or (seen and not snapshot_ends
                                and len(held) + len(seen) >= staging.FLUSH_IDS):
                # Nothing held for this stream in this process (a resumed resync), or enough
                # to write: the staging set now reaches this checkpoint's cursor. Not at the
                # snapshot's last page (the end of the resync drops them a moment later; it
                # reads held ids as it reads written ones), nor with nothing new listed (the
                # end's own checkpoints).
                flush = set(seen) if held is None else held | set(seen)
                _write_staging(conn, sid, flush)
                staged = (resync_cursor,)
            # Each bulk lookup only if the stream has rows it could find (one index probe).
            if seen and bodies and _any(conn, _BODILESS, sid):
                _fill_bodies(conn, sid, seen_ids, seen, bodies, set(new))
            # Now known (or announced deleted): no longer only possibly announced.
            if has_pages(conn, sid):
                settle_pages(conn, sid, {*add_ids, *remove_ids})
            if (new or gone) and _any(conn, _ANNOUNCED, sid):
                delete_keys(conn, "announced", sid, [*new, *gone])
        else:
            conn.execute("DELETE FROM resync_seen WHERE stream_id = ?", (sid,))
            conn.execute("DELETE FROM announced WHERE stream_id = ?", (sid,))
            conn.execute("DELETE FROM announced_pages WHERE stream_id = ?", (sid,))
            staged = (None,)
        insert_items(conn, outbox, now, sid)
        conn.execute(
            "UPDATE streams SET"
            " sync_token = coalesce(:token, sync_token),"
            " filter_fingerprint = coalesce(:fingerprint, filter_fingerprint),"
            " resync_reason = CASE WHEN :in_resync THEN resync_reason END,"
            " token_updated_at = CASE WHEN :token IS NULL THEN token_updated_at ELSE :now END,"
            " resync_cursor = :cursor, in_resync = :in_resync,"
            " staged_cursor = CASE WHEN :staged THEN :cursor ELSE staged_cursor END,"
            " known_count = known_count + :added - :removed,"
            " last_changed_at = CASE WHEN :changed THEN :now ELSE last_changed_at END,"
            " last_checked_at = :now, failures = 0,"
            " quarantined_until = NULL, quarantine_reason = NULL"
            " WHERE stream_id = :sid",
            {
                "token": next_token, "now": now, "cursor": resync_cursor,
                "in_resync": in_resync, "added": added, "removed": removed,
                "changed": changed, "sid": sid, "fingerprint": filter_fingerprint,
                "staged": bool(staged),
            },
        )
    # Committed: only now does the in-memory part of the staging set change.
    if not in_resync:
        staging.drop(sid)
    elif flush is not None:
        staging.restart(sid)
    else:
        held = staging.get(sid)
        assert held is not None
        held.update(seen)
        staging.made_known(sid, new, seen, gone)
    if in_resync and seen_ids:
        listed = staging.listed(sid)
        if listed is not None:
            listed.add_all(seen_ids)


_BODILESS = "SELECT 1 FROM known INDEXED BY known_bodiless WHERE stream_id = ? AND body IS NULL"
_ANNOUNCED = "SELECT 1 FROM announced WHERE stream_id = ?"


def _any(conn: sqlite3.Connection, query: str, sid: int) -> bool:
    return conn.execute(query + " LIMIT 1", (sid,)).fetchone() is not None


def _next_chunk(conn: sqlite3.Connection, sid: int, size: int | None) -> int:
    """The first chunk number free for the stream's new known ids (0 without chunks)."""
    if size is None:
        return 0
    row = conn.execute("SELECT max(chunk) FROM known WHERE stream_id = ? AND chunk IS NOT NULL",
                       (sid,)).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def _write_staging(conn: sqlite3.Connection, sid: int, keys: set[RelKey]) -> None:
    """Insert ``keys`` in SQLite's order (text before blobs), so the insert walks the index
    once instead of jumping around it. The 16-byte keys (all of them, for UUIDs) go in as one
    blob that SQLite cuts up itself: no Python tuple or bound parameter per id."""
    blobs = sorted(k for k in keys if isinstance(k, bytes) and len(k) == 16)
    if len(blobs) < len(keys):  # text keys (not UUIDs)
        rest = [k for k in keys if not (isinstance(k, bytes) and len(k) == 16)]
        insert_rows(conn, "INSERT OR IGNORE INTO resync_seen (stream_id, rel_id) VALUES",
                    [(sid, k) for k in sorted(rest, key=lambda k: (isinstance(k, bytes), k))])
    for start in range(0, len(blobs), _SPLIT_ROWS):
        part = blobs[start:start + _SPLIT_ROWS]
        conn.execute("INSERT OR IGNORE INTO resync_seen (stream_id, rel_id)"
                     " SELECT ?, substr(?, i * 16 + 1, 16) FROM (WITH RECURSIVE n(i) AS"
                     " (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) SELECT i FROM n)",
                     (sid, b"".join(part), len(part)))


_SPLIT_ROWS = 50_000  # keys per blob (800 kB)


def _fill_bodies(conn: sqlite3.Connection, sid: int, seen_ids: Sequence[str],
                 seen: Sequence[RelKey], bodies: Mapping[str, bytes],
                 added: set[RelKey]) -> None:
    """Give known ids a resync lists again the body they lack (ids known before bodies were
    kept): found through the partial index of such ids, a write only where one is missing."""
    by_key = {k: r for k, r in zip(seen, seen_ids, strict=True) if k not in added}
    lacking = present(conn, "known", sid, list(by_key), " AND body IS NULL",
                      index="INDEXED BY known_bodiless")
    rows = [(bodies[by_key[k]], sid, k) for k in lacking if by_key[k] in bodies]
    if rows:
        conn.executemany(
            "UPDATE known SET body = ? WHERE stream_id = ? AND rel_id = ? AND body IS NULL",
            rows)


def begin_resync(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, cursor: str | None,
                 reason: str, filter_fingerprint: str | None) -> None:
    with transaction(conn):
        sid = ids.ensure(conn, key)
        conn.execute("DELETE FROM resync_seen WHERE stream_id = ?", (sid,))
        conn.execute(
            "UPDATE streams SET in_resync = 1, resync_cursor = ?, staged_cursor = ?,"
            " resync_reason = ?, filter_fingerprint = coalesce(?, filter_fingerprint)"
            " WHERE stream_id = ?",
            (cursor, cursor, reason, filter_fingerprint, sid),
        )
        expected = conn.execute("SELECT known_count FROM streams WHERE stream_id = ?",
                                (sid,)).fetchone()[0]
        knows_none = conn.execute("SELECT 1 FROM known WHERE stream_id = ? LIMIT 1",
                                  (sid,)).fetchone() is None
    ids.staging.begin(sid, int(expected), knows_none=knows_none)


def drop_staging(conn: sqlite3.Connection, ids: StreamIds,
                 belongs: Callable[[StreamKey], bool]) -> None:
    """Forget the held ids of the streams ``belongs`` picks (their state is about to be
    replaced, e.g. restored from elsewhere; none of them may be draining)."""
    for sid, _ in ids.staging.items():
        row = conn.execute("SELECT subscription, container_id FROM streams WHERE stream_id = ?",
                           (sid,)).fetchone()
        if row is None or belongs((str(row[0]), str(row[1]))):
            ids.staging.drop(sid)


def flush_staging(conn: sqlite3.Connection, ids: StreamIds) -> None:
    """Write every stream's held staging ids (at close: a restart then resumes from the last
    checkpoint instead of the last written staging set)."""
    for sid, held in ids.staging.items():
        behind = conn.execute("SELECT in_resync AND staged_cursor IS NOT resync_cursor"
                              " FROM streams WHERE stream_id = ?", (sid,)).fetchone()
        if not held and not (behind and behind[0]):
            continue
        with transaction(conn):
            _write_staging(conn, sid, held)
            conn.execute("UPDATE streams SET staged_cursor = resync_cursor"
                         " WHERE stream_id = ? AND in_resync", (sid,))
        ids.staging.restart(sid)


def _unlisted(conn: sqlite3.Connection, ids: StreamIds, sid: int, after: str | None,
              batch: int, table: IdTable, columns: str, extra: str = "") -> list[Any]:
    """Up to ``batch`` rows (``columns`` of ``table``, the key first) whose id is greater than
    ``after`` and that the resync has not listed, in id order.

    Keyset pagination: each call is a fresh query, so removing returned ids between calls is
    safe and memory stays proportional to ``batch``. The written staging set is excluded in
    SQL (``extra`` may exclude more), then the ids held in memory.
    """
    held = ids.staging.get(sid) or set()
    cursor: RelKey | None = None if after is None else rel_key(after)
    out: list[Any] = []
    while len(out) < batch:
        rows = conn.execute(
            f"SELECT {columns} FROM {table} AS t WHERE t.stream_id = ?"
            + ("" if cursor is None else " AND t.rel_id > ?")
            + " AND NOT EXISTS (SELECT 1 FROM resync_seen AS s"
            " WHERE s.stream_id = t.stream_id AND s.rel_id = t.rel_id)"
            + extra + " ORDER BY t.rel_id LIMIT ?",
            (sid, batch) if cursor is None else (sid, cursor, batch)).fetchall()
        out.extend(r for r in rows if r[0] not in held)
        if len(rows) < batch:
            break
        cursor = rows[-1][0]
    return out[:batch]


def resync_missing_batch(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, after: str | None, batch: int
) -> list[KnownRelationship]:
    """Up to ``batch`` known ids greater than ``after`` that the resync has not listed, in
    order, with their bodies (``_unlisted``: the index alone is scanned; bodies are read for
    the result only)."""
    sid = ids.find(conn, key)
    if sid is None or ids.staging.known_held(sid) is not None:
        return []  # (a bootstrap's every known id is held: listed)
    missing = [k for (k,) in _unlisted(conn, ids, sid, after, batch, "known", "t.rel_id")]
    found = {k: (body, fp) for k, body, fp in rows_of(conn, "known", sid, missing,
                                                       "rel_id, body, filter_fingerprint")}
    return [KnownRelationship(rel_id(k), None if body is None else bytes(body), fp)
            for k in missing for body, fp in (found[k],)]


def mark_announced(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, items: Sequence[Announcement]
) -> None:
    """Record created events about to be published, in one transaction, as one row
    (``sqlite_announced``)."""
    with transaction(conn):
        insert_page(conn, ids.ensure(conn, key), items)


def announced_missing_batch(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, after: str | None, batch: int
) -> list[Announcement]:
    """Up to ``batch`` announcements greater than ``after``, neither known nor listed by the
    current resync, in id order (``_unlisted``); those of a page row left by a page cut short
    (``sqlite_announced``) included, a page's body winning over an older one."""
    sid = ids.find(conn, key)
    if sid is None:
        return []
    rows = _unlisted(conn, ids, sid, after, batch, "announced",
                     "t.rel_id, t.created_on, t.raw, t.filter_fingerprint",
                     " AND NOT EXISTS (SELECT 1 FROM known AS k"
                     " WHERE k.stream_id = t.stream_id AND k.rel_id = t.rel_id)")
    found = {k: Announcement(rel_id(k), str(created), bytes(raw), fp)
             for k, created, raw, fp in rows}
    pages = page_announcements(conn, sid) if has_pages(conn, sid) else {}
    if not pages:
        return list(found.values())
    start = None if after is None else _order(rel_key(after))
    keys = [k for k in pages if start is None or _order(k) > start]
    listed = ids.staging.get(sid) or set()
    out = set(present(conn, "known", sid, keys)) | set(present(conn, "resync_seen", sid, keys))
    found.update((k, pages[k]) for k in keys if k not in out and k not in listed)
    return [found[k] for k in sorted(found, key=_order)[:batch]]


def _order(key: RelKey) -> tuple[bool, RelKey]:
    """SQLite's order of keys: text before blobs, each by its bytes."""
    return (isinstance(key, bytes), key)
