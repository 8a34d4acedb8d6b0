"""Announcements in SQLite: one row per page, spread into one row per id only when a page is
left unsettled.

``mark_announced`` records a page's created events as one row of ``announced_pages``: the ids,
creation times, filters and body lengths as one small JSON array (``heads``), the relationships'
JSON concatenated (``raws``). One sequential write, where a row per id dirtied a page of a
random-keyed B-tree for every id (about a third of the SQLite worker's time on a bootstrap). The
page's checkpoint settles every id the page announced (each becomes known), so it deletes the row
whole, reading only its heads. Only a page cut short (a crash or a failed publish before its
checkpoint) leaves its row behind: the next resync checkpoint of the stream moves the ids it does
not settle into ``announced`` (one row per id, the form the end of a resync pages through), an
incremental checkpoint forgets it with the rest, and the end of a resync reads what is still
there (``page_announcements``) along with ``announced``.

These functions run on the store's worker thread, inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Container, Sequence

import orjson

from notifier.state.base import Announcement
from notifier.state.sqlite_keys import RelKey, insert_rows, rel_key

_ANY_PAGE = "SELECT 1 FROM announced_pages WHERE stream_id = ? LIMIT 1"


def insert_page(conn: sqlite3.Connection, sid: int, items: Sequence[Announcement]) -> None:
    """Record ``items`` (one page's created events) as one row, after the stream's others."""
    heads = orjson.dumps([[a.rel_id, a.created_on, a.filter_fingerprint, len(a.raw)]
                          for a in items])
    conn.execute(
        "INSERT INTO announced_pages (stream_id, seq, heads, raws) VALUES (?, 1 + coalesce("
        "(SELECT max(seq) FROM announced_pages WHERE stream_id = ?), 0), ?, ?)",
        (sid, sid, heads, b"".join(a.raw for a in items)))


def has_pages(conn: sqlite3.Connection, sid: int) -> bool:
    return conn.execute(_ANY_PAGE, (sid,)).fetchone() is not None


def upsert_ids(conn: sqlite3.Connection, sid: int, items: Sequence[Announcement]) -> None:
    """One ``announced`` row per id; an id already there takes the newer body and filter."""
    insert_rows(
        conn, "INSERT INTO announced (stream_id, rel_id, created_on, raw, filter_fingerprint)"
        " VALUES",
        [(sid, rel_key(a.rel_id), a.created_on, a.raw, a.filter_fingerprint) for a in items],
        " ON CONFLICT (stream_id, rel_id) DO UPDATE SET created_on = excluded.created_on,"
        " raw = excluded.raw, filter_fingerprint = excluded.filter_fingerprint")


def settle_pages(conn: sqlite3.Connection, sid: int, settled: Container[str]) -> None:
    """A resync checkpoint: the stream's page rows are deleted, their ids that ``settled``
    does not hold (a page cut short, announcing ids this checkpoint does not make known or
    deleted) moved into ``announced`` first, oldest page first (a later body wins)."""
    rows = conn.execute("SELECT seq, heads FROM announced_pages WHERE stream_id = ?"
                        " ORDER BY seq", (sid,)).fetchall()
    for seq, heads in rows:
        if all(h[0] in settled for h in orjson.loads(heads)):
            continue
        (raws,) = conn.execute("SELECT raws FROM announced_pages WHERE stream_id = ?"
                               " AND seq = ?", (sid, seq)).fetchone()
        upsert_ids(conn, sid, [a for a in _decode(heads, raws) if a.rel_id not in settled])
    conn.execute("DELETE FROM announced_pages WHERE stream_id = ?", (sid,))


def page_announcements(conn: sqlite3.Connection, sid: int) -> dict[RelKey, Announcement]:
    """The announcements still in the stream's page rows, by key (a later page's wins)."""
    out: dict[RelKey, Announcement] = {}
    for heads, raws in conn.execute("SELECT heads, raws FROM announced_pages"
                                    " WHERE stream_id = ? ORDER BY seq", (sid,)):
        for a in _decode(heads, raws):
            out[rel_key(a.rel_id)] = a
    return out


def _decode(heads: bytes, raws: bytes) -> list[Announcement]:
    out: list[Announcement] = []
    raw = bytes(raws)
    at = 0
    for rid, created, fp, size in orjson.loads(heads):
        out.append(Announcement(rid, created, raw[at:at + size], fp))
        at += size
    return out
