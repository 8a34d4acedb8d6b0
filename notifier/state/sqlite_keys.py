"""Relationship ids as SQLite keys: 16 bytes for a UUID, and bulk membership queries.

The service's relationship ids are UUIDs in canonical form (36 characters, lowercase). Stored as
their 16 bytes they make the id B-trees about half as large, so more of them stays in SQLite's
page cache and fewer pages are written per checkpoint. An id in any other form is stored as the
text itself: the ``rel_id`` columns are declared BLOB (no type affinity), SQLite keeps TEXT and
BLOB values apart, and each form decodes back to exactly the string it came from.
"""

from __future__ import annotations

import binascii
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any, Literal

from notifier.state.listed_filter import ListedFilter

RelKey = bytes | str
IdTable = Literal["known", "resync_seen", "announced"]

_CHUNK = 5_000  # bound parameters per IN list (SQLite allows 32,766)
_ROWS = 1_000  # rows per multi-row INSERT


def rel_key(rel_id: str) -> RelKey:
    """The stored key of ``rel_id``: its 16 bytes for a canonical lowercase UUID, else itself."""
    if (len(rel_id) == 36 and rel_id[8] == "-" and rel_id[13] == "-" and rel_id[18] == "-"
            and rel_id[23] == "-"):
        digits = rel_id.replace("-", "")
        if len(digits) == 32:
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                return rel_id
            if len(raw) == 16 and raw.hex() == digits:  # lowercase, no whitespace
                return raw
    return rel_id


def rel_id(key: object) -> str:
    """The relationship id a stored key stands for (the inverse of ``rel_key``)."""
    if isinstance(key, bytes):
        h = key.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(key)


def rel_keys(rel_ids: Sequence[str]) -> list[RelKey]:
    """``[rel_key(r) for r in rel_ids]``, converted together: when every id is a canonical
    UUID (a page's ids always are) the whole list is checked and decoded by a few C-level
    string operations (about a third of the per-id calls' cost); otherwise id by id."""
    n = len(rel_ids)
    if n < 2:
        return [rel_key(r) for r in rel_ids]
    joined = "".join(rel_ids).encode()  # a non-ASCII id makes it longer than 36 * n
    if (len(joined) == 36 * n
            and joined[8::36] == joined[13::36] == joined[18::36] == joined[23::36]
            == b"-" * n):
        digits = joined.translate(None, b"-")
        if len(digits) == 32 * n:
            try:
                raw = binascii.unhexlify(digits)
            except binascii.Error:
                raw = b""
            if raw and binascii.hexlify(raw) == digits:  # lowercase only
                return list(_uuids(n).unpack(raw))
    return [rel_key(r) for r in rel_ids]


@lru_cache(maxsize=8)
def _uuids(n: int) -> struct.Struct:
    """Splits ``n`` concatenated 16-byte keys (a few page sizes recur)."""
    return struct.Struct("16s" * n)


def keyed(rel_ids: Sequence[str]) -> dict[RelKey, str]:
    """Each id's key, mapped back to the id (duplicates collapse)."""
    return dict(zip(rel_keys(rel_ids), rel_ids, strict=True))


def chunks(keys: Sequence[RelKey]) -> Iterator[Sequence[RelKey]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start:start + _CHUNK]


def present(conn: sqlite3.Connection, table: IdTable, sid: int, keys: Sequence[RelKey],
            extra: str = "", index: str = "") -> list[RelKey]:
    """Which of ``keys`` the stream's ``table`` holds (``extra``: more SQL conditions on the
    row, ``index``: an INDEXED BY clause); one indexed query per few thousand keys."""
    return [row[0] for row in rows_of(conn, table, sid, keys, "rel_id", extra, index)]


def rows_of(conn: sqlite3.Connection, table: IdTable, sid: int, keys: Sequence[RelKey],
            columns: str, extra: str = "", index: str = "") -> list[tuple[Any, ...]]:
    """``columns`` of the stream's rows in ``table`` whose key is one of ``keys``."""
    found: list[tuple[Any, ...]] = []
    for part in chunks(keys):
        marks = ",".join("?" * len(part))
        found.extend(conn.execute(
            f"SELECT {columns} FROM {table} {index} WHERE stream_id = ?"
            f" AND rel_id IN ({marks}){extra}", (sid, *part)))
    return found


def delete_keys(conn: sqlite3.Connection, table: IdTable, sid: int, keys: Sequence[RelKey]
                ) -> int:
    """Delete the stream's rows of ``table`` whose key is one of ``keys``; how many."""
    removed = 0
    for part in chunks(keys):
        removed += conn.execute(
            f"DELETE FROM {table} WHERE stream_id = ? AND rel_id IN ({','.join('?' * len(part))})",
            (sid, *part)).rowcount
    return removed


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]],
                tail: str = "") -> int:
    """``head`` (``INSERT ... VALUES``) with ``rows`` as multi-row VALUES lists, then ``tail``
    (an upsert clause): one statement per thousand rows (executemany pays a Python round trip
    per row); how many rows were written."""
    if not rows:
        return 0
    one = "(" + ",".join("?" * len(rows[0])) + ")"
    inserted = 0
    for start in range(0, len(rows), _ROWS):
        part = rows[start:start + _ROWS]
        inserted += conn.execute(head + " " + ",".join([one] * len(part)) + tail,
                                 list(chain.from_iterable(part))).rowcount
    return inserted


class Staging:
    """The ids a resync listed since its staging set was last written, per stream id.

    Staging every listed id durably page by page writes one B-tree page per id (random keys),
    so ids are kept here and written in bulk, sorted, every ``FLUSH_IDS`` or so (never at the
    resync's last page: its end follows and drops them); the stream's ``staged_cursor``
    records how far the written set reaches. A crash loses what is held here,
    and the resync then resumes from ``staged_cursor`` (listing those pages again) instead of
    its last checkpoint. Entries are dropped only with their stream (never on a failed call):
    an entry is exactly what was listed after ``staged_cursor`` in this process.

    A resync that began in this process also has a ``ListedFilter`` of every id it listed,
    written or held: the restart check asks the store only about the ids it may contain. A
    resync resumed from an earlier process has none (its written ids are not in memory).

    Until its first write, such a resync's held ids are every id it listed (``all_held``): the
    restart check needs neither the filter nor the store. If the stream knew no id when the
    resync began (a bootstrap), the ids it knows since are exactly those it listed (a resync
    checkpoint makes every id its page lists known, and only those), until a page deletes one:
    so until that first write or deletion the held ids also answer the known-set lookups
    (``known_held``): a bootstrap of fewer than ``FLUSH_IDS`` relationships never looks an
    id up in SQLite.
    """

    FLUSH_IDS = 100_000

    def __init__(self) -> None:
        self._held: dict[int, set[RelKey]] = {}
        self._listed: dict[int, ListedFilter] = {}
        self._unwritten: set[int] = set()  # began in this process, nothing written since
        self._knows_listed: set[int] = set()  # every id the stream knows was listed since

    def __contains__(self, sid: int) -> bool:
        return sid in self._held

    def get(self, sid: int) -> set[RelKey] | None:
        return self._held.get(sid)

    def listed(self, sid: int) -> ListedFilter | None:
        """The filter of every id the stream's resync listed, if it began in this process."""
        return self._listed.get(sid)

    def all_held(self, sid: int) -> set[RelKey] | None:
        """The held ids if they are every id the stream's resync listed, else None."""
        return self._held.get(sid) if sid in self._unwritten else None

    def known_held(self, sid: int) -> set[RelKey] | None:
        """The held ids if they also hold every id the stream knows, else None."""
        return self.all_held(sid) if sid in self._knows_listed else None

    def made_known(self, sid: int, added: Sequence[RelKey], listed: Sequence[RelKey],
                   removed: Sequence[RelKey]) -> None:
        """A resync checkpoint made ``added`` known and ``removed`` unknown while listing
        ``listed``: an id made known that it did not list (no drain does that), or one made
        unknown (a deletion on a snapshot page: it stays held, as listed, but is no longer
        known), ends ``known_held`` for the rest of the resync."""
        if sid in self._knows_listed and (
                removed or (added and not set(added).issubset(listed))):
            self._knows_listed.discard(sid)

    def items(self) -> list[tuple[int, set[RelKey]]]:
        return list(self._held.items())

    def begin(self, sid: int, expected: int, *, knows_none: bool = False) -> None:
        """A new snapshot: nothing listed, nothing held (``expected``: about how many ids it
        will list, to size the filter; ``knows_none``: the stream knows no id now)."""
        self._held[sid] = set()
        self._listed[sid] = ListedFilter(expected)
        self._unwritten.add(sid)
        if knows_none:
            self._knows_listed.add(sid)
        else:
            self._knows_listed.discard(sid)

    def restart(self, sid: int) -> None:
        """Everything listed so far is written (or the staging set is empty): hold nothing."""
        self._held[sid] = set()
        self._unwritten.discard(sid)

    def drop(self, sid: int) -> None:
        self._held.pop(sid, None)
        self._listed.pop(sid, None)
        self._unwritten.discard(sid)
        self._knows_listed.discard(sid)
