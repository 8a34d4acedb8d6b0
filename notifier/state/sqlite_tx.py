"""Explicit write transactions on an autocommit sqlite3 connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: all of the block or none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def json_list(values: Sequence[str] | Sequence[int]) -> str:
    """A JSON array bound as one parameter and read back with ``json_each``: one statement for
    any number of values, no SQLITE_MAX_VARIABLE_NUMBER chunking."""
    return orjson.dumps(list(values)).decode()
