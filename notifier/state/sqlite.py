"""The SQLite state store: refresh tokens, streams, known ids and checkpoints, async methods.

One connection on one worker thread (notifier.state.sqlite_base); the webhook outbox methods
are in sqlite_outbox_methods. Every write is one fsync'd transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from notifier.state import sqlite_checks as group_checks
from notifier.state import sqlite_credentials as cr
from notifier.state import sqlite_known as kn
from notifier.state import sqlite_streams as st
from notifier.state import sqlite_subscriptions as subs
from notifier.state.base import (
    Announcement,
    CheckStamps,
    CredentialRecord,
    GroupKey,
    KnownRelationship,
    OutboxItem,
    PruneResult,
    ResyncReason,
    StreamCheckState,
    StreamKey,
    StreamState,
)
from notifier.state.sqlite_outbox_methods import OutboxMethods
from notifier.state.sqlite_tx import transaction


class SqliteStateStore(OutboxMethods):
    """``async with SqliteStateStore(path) as store:`` opens (creating parent directories),
    migrates, and closes on exit. Implements ``notifier.state.base.StateStore``: the
    connection is SqliteConnection's (sqlite_base), the outbox methods OutboxMethods'."""

    # -- refresh tokens -----------------------------------------------------------------------

    async def load_refresh_token(self, credential: str, seed_fingerprint: str) -> str | None:
        """The rotated token stored for ``credential``, only if it grew from the same seed
        (a re-seeded credential starts over from its configured token)."""
        return await self._call("load refresh token", _load_token, credential, seed_fingerprint)

    async def save_refresh_token(
        self, credential: str, seed_fingerprint: str, refresh_token: str
    ) -> None:
        """Store the newest refresh token of ``credential``; fsync'd before returning."""
        await self._call(
            "save refresh token", _save_token, credential, seed_fingerprint, refresh_token,
            time.time(),
        )

    async def record_credential_outcome(self, credential: str, outcome: str,
                                        now: float | None = None) -> None:
        """Remember a refresh outcome for ``notifier auth status``."""
        when = time.time() if now is None else now
        await self._call("record credential outcome", cr.record_outcome, credential, outcome,
                         when)

    async def credential_records(self) -> list[CredentialRecord]:
        return await self._call("read credential status", cr.records)

    # -- streams ------------------------------------------------------------------------------

    async def get_stream(self, subscription: str, container_id: str) -> StreamState | None:
        return await self._call("get stream", st.get_stream, self._ids,
                                (subscription, container_id))

    async def list_streams(self) -> list[StreamState]:
        return await self._call("list streams", st.list_streams, self._ids)

    async def stream_checks(self) -> list[StreamCheckState]:
        return await self._call("list streams", st.stream_checks)

    async def check_stamps(self) -> CheckStamps:
        return await self._call("read check stamps", group_checks.check_stamps)

    async def mark_checked(self, keys: Sequence[StreamKey], now: float,
                           groups: Sequence[GroupKey] = ()) -> None:
        """Record a successful status check of many streams in one transaction: those of
        ``keys`` each, every stream of each of ``groups`` with one stamp (sqlite_checks)."""
        if keys or groups:
            await self._call("mark checked", st.mark_checked, list(keys), now, list(groups))

    async def quarantine(
        self, subscription: str, container_id: str, until: float, reason: str
    ) -> None:
        """Park a stream until ``until`` and count one more consecutive failure."""
        await self._call(
            "quarantine", st.quarantine, self._ids, (subscription, container_id), until, reason
        )

    async def clear_quarantine(
        self, subscription: str, container_id: str, *, reset_failures: bool = False
    ) -> None:
        """Lift a quarantine; ``failures`` is kept (backoff grows) unless ``reset_failures``.
        A committed page resets both anyway."""
        await self._call(
            "clear quarantine", st.clear_quarantine, (subscription, container_id),
            reset_failures,
        )

    async def forget_stream(self, subscription: str, container_id: str) -> bool:
        """Drop a stream with its token, known ids and staging; True if it existed.
        Outbox rows already queued stay and are still delivered."""
        return await self._call(
            "forget stream", st.forget_stream, self._ids, (subscription, container_id)
        )

    async def prune_streams(
        self, keep: set[StreamKey], *, now: float, retention: float,
        subscriptions: set[str] | None = None,
    ) -> PruneResult:
        """Streams not in ``keep`` (subscriptions missing from the config) are marked orphaned
        from ``now``, and dropped once orphaned for ``retention`` seconds; streams in ``keep``
        stop being orphans (``subscriptions``: only streams of these are looked at). One
        transaction."""
        return await self._call(
            "prune streams", subs.prune_streams, self._ids, set(keep), now, retention,
            subscriptions
        )

    async def forget_subscription(self, subscription: str) -> int:
        """Drop every stream of ``subscription`` (token, known ids, staging); how many.
        Outbox rows already queued stay and are still delivered."""
        return await self._call(
            "forget subscription", subs.forget_subscription, self._ids, subscription
        )

    async def rename_subscription(self, old: str, new: str) -> int:
        """Move every stream of ``old`` to ``new``; how many. StateError if ``new`` has any."""
        return await self._call(
            "rename subscription", subs.rename_subscription, self._ids, old, new
        )

    # -- known ids and checkpoints -----------------------------------------------------------

    async def known_subset(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> set[str]:
        """Which of ``ids`` the stream knows: one indexed query, whatever the page size."""
        if not ids:
            return set()
        return await self._call(
            "known subset", kn.known_subset, self._ids, (subscription, container_id), list(ids)
        )

    async def known_bodies(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> dict[str, bytes]:
        """The last bodies seen of those of ``ids`` that are known (and have one)."""
        if not ids:
            return {}
        return await self._call(
            "known bodies", kn.known_bodies, self._ids, (subscription, container_id), list(ids)
        )

    async def resync_seen_subset(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> set[str]:
        """Which of ``ids`` the resync in progress has already listed (committed pages)."""
        if not ids:
            return set()
        return await self._call(
            "resync seen", kn.resync_seen_subset, self._ids, (subscription, container_id),
            list(ids),
        )

    async def commit_page(
        self,
        subscription: str,
        container_id: str,
        *,
        next_token: str | None,
        resync_cursor: str | None,
        in_resync: bool,
        add_ids: Sequence[str],
        remove_ids: Sequence[str],
        seen_ids: Sequence[str] = (),
        outbox: Sequence[OutboxItem] = (),
        bodies: Mapping[str, bytes] | None = None,
        filter_fingerprint: str | None = None,
        listed_under: str | None = None,
        changed: bool,
        now: float,
        snapshot_ends: bool = False,
    ) -> None:
        """The checkpoint. In one fsync'd transaction: remove then add known ids, record
        ``seen_ids`` in the resync staging set and forget the announcements of ``add_ids``
        and ``remove_ids`` (or, when ``in_resync`` is False, empty both), queue ``outbox``
        rows, set ``sync_token`` (kept as is when ``next_token`` is None), ``resync_cursor``
        and ``in_resync`` as given (and ``filter_fingerprint`` when given), stamp
        last_checked_at (and last_changed_at if ``changed``), reset failures and any
        quarantine. ``bodies`` (JSON, by id) are stored with ``add_ids``, and with
        ``seen_ids`` that are known without one; ``listed_under`` with ``add_ids``. Creates
        the stream if new. ``snapshot_ends`` (the resync's last page): the listed ids held in
        memory are not written, however many (the end of the resync, which follows, drops
        them; a crash before it resumes from the written ones, as anywhere). Raises
        ValueError, before touching anything, on an id both added and removed or on
        ``seen_ids`` outside a resync."""
        if not in_resync and seen_ids:
            raise ValueError("seen_ids are only recorded during a resync (in_resync=True)")
        if not in_resync and resync_cursor is not None:
            raise ValueError("a resync_cursor requires in_resync=True")
        if add_ids and remove_ids and not set(add_ids).isdisjoint(remove_ids):
            raise ValueError("an id is both added and removed in one page")
        await self._call(
            "commit page", kn.commit_page, self._ids, (subscription, container_id),
            next_token=next_token, resync_cursor=resync_cursor, in_resync=in_resync,
            add_ids=list(add_ids), remove_ids=list(remove_ids), seen_ids=list(seen_ids),
            outbox=list(outbox), bodies=bodies or {}, filter_fingerprint=filter_fingerprint,
            listed_under=listed_under, changed=changed, now=now, snapshot_ends=snapshot_ends,
        )

    async def begin_resync(
        self, subscription: str, container_id: str, *, cursor: str | None = None,
        reason: ResyncReason = "snapshot", filter_fingerprint: str | None = None,
    ) -> None:
        """Start (or start over) a resync: empty the staging set, set in_resync, the cursor
        (None: the snapshot starts from the beginning), the reason, and the filter
        fingerprint when given. The sync token and the known set are untouched."""
        await self._call(
            "begin resync", kn.begin_resync, self._ids, (subscription, container_id), cursor,
            reason, filter_fingerprint,
        )

    async def iter_resync_missing(
        self, subscription: str, container_id: str, batch: int = 10_000
    ) -> AsyncIterator[list[KnownRelationship]]:
        """Known ids the current resync has not seen (the deletions), ascending, in batches,
        each with its last body seen.

        Each batch is its own query (keyset pagination), so memory stays bounded by ``batch``
        and the caller may checkpoint a batch's removals before asking for the next one.
        """
        if batch <= 0:
            raise ValueError("batch must be positive")
        key = (subscription, container_id)
        after: str | None = None
        while True:
            ids = await self._call(
                "resync diff", kn.resync_missing_batch, self._ids, key, after, batch
            )
            if not ids:
                return
            yield ids
            if len(ids) < batch:
                return
            after = ids[-1].rel_id

    async def mark_announced(
        self, subscription: str, container_id: str, items: Sequence[Announcement]
    ) -> None:
        """Record, in one fsync'd transaction, the created events a page is about to
        publish; its checkpoint (or the end of the resync) forgets them. Creates the stream
        if new; an id already announced keeps one row with the newest body and filter."""
        if items:
            await self._call(
                "mark announced", kn.mark_announced, self._ids, (subscription, container_id),
                list(items),
            )

    async def iter_announced_missing(
        self, subscription: str, container_id: str, batch: int = 1_000
    ) -> AsyncIterator[list[Announcement]]:
        """Announcements the current resync has neither seen nor made known, by id, in
        batches: created events that may have gone out for relationships gone since. Keyset
        pagination, as ``iter_resync_missing``."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        key = (subscription, container_id)
        after: str | None = None
        while True:
            items = await self._call(
                "announced diff", kn.announced_missing_batch, self._ids, key, after, batch
            )
            if not items:
                return
            yield items
            if len(items) < batch:
                return
            after = items[-1].rel_id

    async def finish_resync(
        self,
        subscription: str,
        container_id: str,
        *,
        next_token: str,
        remove_ids: Sequence[str] = (),
        outbox: Sequence[OutboxItem] = (),
        changed: bool,
        now: float,
    ) -> None:
        """End a drain in one transaction: remove ``remove_ids`` from the known set, queue
        ``outbox``, store ``next_token``, clear in_resync, the cursor, the staging set and
        the announcements."""
        await self.commit_page(
            subscription, container_id, next_token=next_token, resync_cursor=None,
            in_resync=False, add_ids=(), remove_ids=remove_ids, outbox=outbox,
            changed=changed, now=now,
        )


def _load_token(conn: sqlite3.Connection, credential: str, fingerprint: str) -> str | None:
    row = conn.execute(
        "SELECT refresh_token FROM refresh_tokens WHERE credential = ? AND seed_fingerprint = ?",
        (credential, fingerprint),
    ).fetchone()
    return None if row is None else str(row[0])


def _save_token(
    conn: sqlite3.Connection, credential: str, fingerprint: str, token: str, now: float
) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO refresh_tokens (credential, seed_fingerprint, refresh_token, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (credential) DO UPDATE SET"
            " seed_fingerprint = excluded.seed_fingerprint,"
            " refresh_token = excluded.refresh_token, updated_at = excluded.updated_at",
            (credential, fingerprint, token, now),
        )
