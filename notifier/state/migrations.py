"""The SQLite schema as an ordered list of migrations, applied when the store opens.

The schema version lives in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as
ours. Append new migrations at the end, never edit a released one.
"""

from __future__ import annotations

import logging
import sqlite3

from notifier.errors import StateError
from notifier.state.sqlite_keys import rel_key

log = logging.getLogger(__name__)

# "NtFy" as a big-endian 32-bit integer: tells our files from any other SQLite database.
APPLICATION_ID = 0x4E744679

_V1 = (
    """CREATE TABLE streams (
        stream_id         INTEGER PRIMARY KEY,
        subscription      TEXT NOT NULL,
        container_id      TEXT NOT NULL,
        sync_token        TEXT,
        resync_cursor     TEXT,
        in_resync         INTEGER NOT NULL DEFAULT 0,
        last_checked_at   REAL,
        last_changed_at   REAL,
        token_updated_at  REAL,
        known_count       INTEGER NOT NULL DEFAULT 0,
        quarantined_until REAL,
        quarantine_reason TEXT,
        failures          INTEGER NOT NULL DEFAULT 0,
        UNIQUE (subscription, container_id)
    )""",
    """CREATE TABLE known (
        stream_id INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id    TEXT NOT NULL,
        PRIMARY KEY (stream_id, rel_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE resync_seen (
        stream_id INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id    TEXT NOT NULL,
        PRIMARY KEY (stream_id, rel_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE refresh_tokens (
        credential       TEXT PRIMARY KEY,
        seed_fingerprint TEXT NOT NULL,
        refresh_token    TEXT NOT NULL,
        updated_at       REAL NOT NULL
    )""",
    """CREATE TABLE outbox (
        row_id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sink            TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        ordering_key    TEXT NOT NULL,
        payload         BLOB NOT NULL,
        event_time      TEXT NOT NULL,
        created_at      REAL NOT NULL,
        enqueued_at     REAL NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        delivered_at    REAL,
        dead_at         REAL,
        dead_reason     TEXT,
        origin_row_id   INTEGER
    )""",
    "CREATE INDEX outbox_pending_order ON outbox (sink, row_id) WHERE status = 'pending'",
    "CREATE INDEX outbox_pending_key ON outbox (sink, ordering_key, row_id)"
    " WHERE status = 'pending'",
    "CREATE INDEX outbox_dead ON outbox (sink, created_at) WHERE status = 'dead'",
    "CREATE INDEX outbox_delivered ON outbox (sink, created_at) WHERE status = 'delivered'",
    "CREATE INDEX outbox_delivered_at ON outbox (delivered_at) WHERE status = 'delivered'",
)

_V2 = (
    # Created events of a resync page, recorded durably before they are published and removed
    # by the page's checkpoint: what a crash in between may have announced. The relationship is
    # kept (``raw``: the JSON the API sent) so a vanished one can be announced again, then
    # deleted. Rows live only between a publish and its checkpoint, or until a resync ends.
    """CREATE TABLE announced (
        stream_id  INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id     TEXT NOT NULL,
        created_on TEXT NOT NULL,
        raw        BLOB NOT NULL,
        PRIMARY KEY (stream_id, rel_id)
    ) WITHOUT ROWID""",
)

_V3 = (
    # The last body seen with each known id (the relationship JSON without isDeleted and
    # deletedOn), so that a deletion found only by a resync still names both entities. NULL
    # for ids known before this version until a resync lists them again.
    "ALTER TABLE known ADD COLUMN body BLOB",
    # Fingerprint of the filter (domains / query) the stream's token or cursor was issued for;
    # NULL before this version (adopted, without a resync, by the next drain).
    "ALTER TABLE streams ADD COLUMN filter_fingerprint TEXT",
    # Why the resync in progress runs: 'snapshot' (bootstrap, overwrite, rejected token or
    # cursor) or 'filter' (the filter changed: known ids it no longer lists are forgotten
    # without deleted events). NULL when not in a resync.
    "ALTER TABLE streams ADD COLUMN resync_reason TEXT",
    # When the stream's subscription was first found missing from the configuration; its
    # state is kept for the orphan retention, then dropped. NULL while configured.
    "ALTER TABLE streams ADD COLUMN orphaned_at REAL",
)

_V4 = (
    # Credential health for `notifier auth status` (another process than the notifier): the
    # last successful refresh and the last failure (an outcome name, never a secret).
    """CREATE TABLE credential_status (
        credential      TEXT PRIMARY KEY,
        last_refresh_at REAL,
        last_error      TEXT,
        last_error_at   REAL
    )""",
)

_V5 = (
    # Relationship ids as keys (notifier.state.sqlite_keys.rel_key: the 16 bytes of a canonical
    # UUID, any other id as its text; ``rel_key`` is registered as an SQL function for this).
    # The known set becomes a rowid table (no WITHOUT ROWID): rows and their bodies are
    # appended in rowid order, and only its primary key's compact index is written at random
    # places.
    """CREATE TABLE known_v5 (
        stream_id INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id    BLOB NOT NULL,
        body      BLOB,
        PRIMARY KEY (stream_id, rel_id)
    )""",
    "INSERT INTO known_v5 (stream_id, rel_id, body)"
    " SELECT stream_id, rel_key(rel_id), body FROM known ORDER BY stream_id, rel_id",
    "DROP TABLE known",
    "ALTER TABLE known_v5 RENAME TO known",
    # Ids known without a body (known before version 3): a resync that lists them fills it in.
    "CREATE INDEX known_bodiless ON known (stream_id, rel_id) WHERE body IS NULL",
    """CREATE TABLE resync_seen_v5 (
        stream_id INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id    BLOB NOT NULL,
        PRIMARY KEY (stream_id, rel_id)
    ) WITHOUT ROWID""",
    "INSERT INTO resync_seen_v5 SELECT stream_id, rel_key(rel_id) FROM resync_seen",
    "DROP TABLE resync_seen",
    "ALTER TABLE resync_seen_v5 RENAME TO resync_seen",
    """CREATE TABLE announced_v5 (
        stream_id  INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        rel_id     BLOB NOT NULL,
        created_on TEXT NOT NULL,
        raw        BLOB NOT NULL,
        PRIMARY KEY (stream_id, rel_id)
    ) WITHOUT ROWID""",
    "INSERT INTO announced_v5 SELECT stream_id, rel_key(rel_id), created_on, raw FROM announced",
    "DROP TABLE announced",
    "ALTER TABLE announced_v5 RENAME TO announced",
    # How far the written staging set (resync_seen) reaches: a resync's ids are held in memory
    # and written in bulk, so after a crash it resumes from here, not from resync_cursor (the
    # last checkpoint). Before this version every listed id was written at its checkpoint.
    "ALTER TABLE streams ADD COLUMN staged_cursor TEXT",
    "UPDATE streams SET staged_cursor = resync_cursor",
)

_V6 = (
    # Outbox rows hang off their stream and carry a key that names them on every replica
    # (cluster mode ships them, with their delivery marks, through the state topic, where the
    # local row_id means nothing): (stream_id, seq), seq counting up per stream. It also orders
    # a relationship's events within the stream (row_id order is local to one file). A stream
    # that is forgotten leaves its rows behind, as before (SET NULL). Rows of earlier versions
    # find their stream from the event they hold and keep their row_id as seq.
    "ALTER TABLE outbox ADD COLUMN stream_id INTEGER"
    " REFERENCES streams (stream_id) ON DELETE SET NULL",
    "ALTER TABLE outbox ADD COLUMN seq INTEGER",
    "UPDATE outbox SET seq = row_id, stream_id = (SELECT s.stream_id FROM streams AS s"
    " WHERE json_valid(CAST(outbox.payload AS TEXT))"
    " AND s.subscription = json_extract(CAST(outbox.payload AS TEXT), '$.data.subscription')"
    " AND s.container_id = json_extract(CAST(outbox.payload AS TEXT), '$.data.containerId'))",
    "CREATE UNIQUE INDEX outbox_stream_seq ON outbox (stream_id, seq)",
    "DROP INDEX outbox_pending_key",
    "CREATE INDEX outbox_pending_key ON outbox (sink, ordering_key, stream_id, seq)"
    " WHERE status = 'pending'",
)

_V7 = (
    # The filter (fingerprint, as streams.filter_fingerprint) an announcement was made under:
    # at the end of a filter resync, an announced relationship the new snapshot did not list
    # is reported deleted if it was announced under that same filter (it matched it, so it is
    # gone); under another one it may only have left the filter. NULL before this version.
    "ALTER TABLE announced ADD COLUMN filter_fingerprint TEXT",
    # The query filter (fingerprint) that listed a known id: a search query's matching is a
    # fixed property of a relationship, so one missing from a later snapshot of that query is
    # gone, not out of the filter. NULL under a domains filter (the body tells) and for ids
    # known before this version.
    "ALTER TABLE known ADD COLUMN filter_fingerprint TEXT",
)

_V8 = (
    # The chunk a known id was added in, in cluster mode (NULL otherwise): the state topic
    # carries a stream's known ids as one record per chunk (a page's new ids, a few dozen to a
    # record) instead of one per id; see notifier.cluster.capture.
    "ALTER TABLE known ADD COLUMN chunk INTEGER",
    "CREATE INDEX known_chunk ON known (stream_id, chunk) WHERE chunk IS NOT NULL",
)

_V9 = (
    # A page's announcements as one row (notifier.state.sqlite_announced): ``heads`` is a JSON
    # array of [id, createdOn, filter fingerprint, length of its body], ``raws`` the bodies
    # (the relationships' JSON) one after the other. Written once per page and deleted whole by
    # its checkpoint; ``announced`` (a row per id) keeps what a page cut short left unsettled.
    """CREATE TABLE announced_pages (
        stream_id INTEGER NOT NULL REFERENCES streams (stream_id) ON DELETE CASCADE,
        seq       INTEGER NOT NULL,
        heads     BLOB NOT NULL,
        raws      BLOB NOT NULL,
        PRIMARY KEY (stream_id, seq)
    )""",
)

_V10 = (
    # The known set without its foreign key. Every checkpoint inserts its new known ids, and
    # the key's check of each row's stream (a lookup in ``streams`` per row) was about a third
    # of that insert. It guarded nothing: a checkpoint writes its rows in the transaction that
    # makes sure of their stream row, cluster restore finds the stream by its natural key (a
    # NULL stream_id fails NOT NULL). Its cascade becomes a trigger: deleting a stream still
    # deletes its known ids, in the same statement. Rows keep their rowids (their order).
    """CREATE TABLE known_v10 (
        stream_id          INTEGER NOT NULL,
        rel_id             BLOB NOT NULL,
        body               BLOB,
        filter_fingerprint TEXT,
        chunk              INTEGER,
        PRIMARY KEY (stream_id, rel_id)
    )""",
    "INSERT INTO known_v10 (rowid, stream_id, rel_id, body, filter_fingerprint, chunk)"
    " SELECT rowid, stream_id, rel_id, body, filter_fingerprint, chunk FROM known"
    " ORDER BY rowid",
    "DROP TABLE known",
    "ALTER TABLE known_v10 RENAME TO known",
    "CREATE INDEX known_bodiless ON known (stream_id, rel_id) WHERE body IS NULL",
    "CREATE INDEX known_chunk ON known (stream_id, chunk) WHERE chunk IS NOT NULL",
    "CREATE TRIGGER known_of_deleted_stream AFTER DELETE ON streams"
    " BEGIN DELETE FROM known WHERE stream_id = old.stream_id; END",
)

_V11 = (
    # A check that covered every stream of a container's group, stamped once (rather than in
    # each stream's row): ``members`` names the subscriptions of the streams it covered, each
    # between newlines. A stream's check time is the later of its row's last_checked_at and
    # the stamps naming it (notifier.state.sqlite_checks). Empty in cluster mode.
    """CREATE TABLE group_checks (
        container_id TEXT NOT NULL,
        members      TEXT NOT NULL,
        checked_at   REAL NOT NULL,
        PRIMARY KEY (container_id, members)
    ) WITHOUT ROWID""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10,
                                           _V11)
"""MIGRATIONS[i] takes the schema from version i to version i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database at ``path`` to SCHEMA_VERSION; returns the version it had before.

    Checks and migrations run in one IMMEDIATE transaction together with the version bump, so
    two processes opening the file at once cannot both migrate, and a crash mid-migration
    leaves the file at the version it had.
    """
    conn.create_function("rel_key", 1, rel_key, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = _check(conn, path)
        if 0 < start < SCHEMA_VERSION:
            log.info("state schema: migrating %s from version %s to %s (once; on a large file "
                     "this can take minutes)", path, start, SCHEMA_VERSION)
        for version in range(start, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if start < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if start < SCHEMA_VERSION:
        log.info("state schema migrated from version %s to %s (%s)", start, SCHEMA_VERSION, path)
    return start


def _check(conn: sqlite3.Connection, path: str) -> int:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if app_id not in (0, APPLICATION_ID):
        raise StateError(f"{path} is an SQLite database but not a notifier state file")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state file {path} has schema version {version}, newer than the {SCHEMA_VERSION} "
            "this notifier understands: it was written by a newer release. Upgrade notifier, "
            "or point state.path at another file."
        )
    if app_id == 0:
        tables = int(conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0])
        if version or tables:
            raise StateError(f"{path} is an SQLite database but not a notifier state file")
    return version
