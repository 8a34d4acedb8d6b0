"""Check times stamped once per container: the ``group_checks`` table (schema 11).

A status check that covered every stream of a container's group (the usual idle check) is
stamped with one row, keyed by the container and the subscriptions of the streams it covered
(``members``: each name between newlines), instead of one write to each stream's row: at
100,000 streams over 10,000 containers an idle pass writes 10,000 rows, not 100,000. A check
that covered only some streams (others quarantined, skipped followers), or a group's only
stream, stamps the streams it covered in their own rows, as before.

A stream's check time is the later of its row's ``last_checked_at`` and the stamps of its
container whose members name it: a stamp only ever speaks for the streams it covered, so a
stream the check skipped, or one added to the container since, keeps its own older time.
Reads combine the two in Python (a join over every stream costs start-up ~0.3 s at 100,000);
start-up reads the stamps apart (``check_stamps``) and the scheduler combines them per group.
Before a stream is deleted or its subscription renamed, the stamps of the containers
concerned are written into their streams' rows and dropped (``fold``): a stamp never names a
stream it did not check. Cluster mode stamps every stream's row (its state topic carries
stream rows only) and keeps this table empty.

These run on the store's worker thread only.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence

import orjson

from notifier.state.base import CheckStamps, GroupKey


def members_text(subscriptions: Sequence[str]) -> str:
    """``members`` of a stamp: "\\na\\nb\\n" (names cannot hold a newline: config.types)."""
    return "\n" + "\n".join(subscriptions) + "\n"


def stamp(conn: sqlite3.Connection, groups: Sequence[GroupKey], now: float) -> None:
    """One row per group, in one statement (call inside the write transaction); a stamp
    never moves back (a batch is stamped with its oldest time)."""
    conn.execute(
        "INSERT INTO group_checks (container_id, members, checked_at)"
        " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?1"
        " FROM json_each(?2) WHERE true"
        " ON CONFLICT (container_id, members)"
        " DO UPDATE SET checked_at = max(checked_at, excluded.checked_at)",
        (now, orjson.dumps([(cid, members_text(subs)) for cid, subs in groups]).decode()),
    )


def check_stamps(conn: sqlite3.Connection) -> CheckStamps:
    """Every stamp by container, its members as names. Interned: they are the
    configuration's own strings (config.types), so 10,000 stamps of 10 add no copies of them
    to start-up's peak memory (~6 MB at 100,000 streams) for ~0.05 s."""
    out: CheckStamps = {}
    intern = sys.intern
    for cid, members, at in conn.execute(
            "SELECT container_id, members, checked_at FROM group_checks"):
        subs = tuple(map(intern, members[1:-1].split("\n")))
        out.setdefault(intern(cid), []).append((subs, float(at)))
    return out


def covering(found: CheckStamps, subscription: str, container_id: str,
             own: float | None) -> float | None:
    """The stream's check time: the later of its own (``own``) and the stamps naming it
    (``found``: ``check_stamps``)."""
    best = own
    for subs, at in found.get(container_id, ()):
        if (best is None or at > best) and subscription in subs:
            best = at
    return best


def stream_stamp(conn: sqlite3.Connection, subscription: str, container_id: str
                 ) -> float | None:
    """The latest stamp naming one stream (None without one)."""
    row = conn.execute(
        "SELECT max(checked_at) FROM group_checks WHERE container_id = ?"
        " AND instr(members, char(10) || ? || char(10)) > 0",
        (container_id, subscription)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def fold(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> None:
    """Write the stamps selected by ``where`` (a condition on group_checks) into the rows of
    the streams they name, then drop them (inside the caller's write transaction)."""
    conn.execute(
        "UPDATE streams SET last_checked_at = (SELECT max(t) FROM ("
        " SELECT streams.last_checked_at AS t UNION ALL SELECT g.checked_at FROM group_checks"
        f" AS g WHERE g.container_id = streams.container_id AND ({where})"
        " AND instr(g.members, char(10) || streams.subscription || char(10)) > 0))"
        f" WHERE container_id IN (SELECT g.container_id FROM group_checks AS g WHERE {where})",
        (*params, *params))
    conn.execute(f"DELETE FROM group_checks AS g WHERE {where}", params)


def fold_containers(conn: sqlite3.Connection, containers: Sequence[str]) -> None:
    """``fold`` every stamp of these containers (streams of theirs are about to go)."""
    if containers:
        fold(conn, "g.container_id IN (SELECT value FROM json_each(?))",
             (orjson.dumps(sorted(set(containers))).decode(),))


def fold_subscription(conn: sqlite3.Connection, subscription: str) -> None:
    """``fold`` every stamp naming ``subscription`` (about to be forgotten or renamed)."""
    fold(conn, "instr(g.members, char(10) || ? || char(10)) > 0", (subscription,))
