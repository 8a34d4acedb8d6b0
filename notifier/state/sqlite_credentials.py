"""Credential health in SQLite: when each credential last refreshed and its last failure.

Written by the running notifier (every refresh outcome) and by ``notifier auth login``; read by
``notifier auth status``, which runs as another process and so can only learn it from the store.
The refresh token itself lives in ``refresh_tokens``; its ``updated_at`` is when it was issued.
"""

from __future__ import annotations

import sqlite3

from notifier.state.base import CredentialRecord
from notifier.state.sqlite_tx import transaction


def record_outcome(conn: sqlite3.Connection, credential: str, outcome: str, now: float) -> None:
    """``ok`` stamps the last refresh; anything else is the last error (kept after a success,
    with its time, so status can tell which came last)."""
    with transaction(conn):
        if outcome == "ok":
            conn.execute(
                "INSERT INTO credential_status (credential, last_refresh_at) VALUES (?, ?)"
                " ON CONFLICT (credential) DO UPDATE SET"
                " last_refresh_at = excluded.last_refresh_at",
                (credential, now),
            )
        else:
            conn.execute(
                "INSERT INTO credential_status (credential, last_error, last_error_at)"
                " VALUES (?, ?, ?) ON CONFLICT (credential) DO UPDATE SET"
                " last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (credential, outcome, now),
            )


def records(conn: sqlite3.Connection) -> list[CredentialRecord]:
    """Every credential the store knows anything about, by name."""
    rows = conn.execute(
        "SELECT c.credential, t.seed_fingerprint, t.updated_at, s.last_refresh_at,"
        " s.last_error, s.last_error_at"
        " FROM (SELECT credential FROM refresh_tokens UNION SELECT credential"
        "       FROM credential_status) AS c"
        " LEFT JOIN refresh_tokens AS t ON t.credential = c.credential"
        " LEFT JOIN credential_status AS s ON s.credential = c.credential"
        " ORDER BY c.credential"
    ).fetchall()
    return [CredentialRecord(*row) for row in rows]
