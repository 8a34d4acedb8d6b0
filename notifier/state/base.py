"""The state store interface: sync checkpoints, known ids, announcements, refresh tokens, outbox.

The unit of sync state is a *stream*: (subscription name, container id), one sync token each.
Every method that writes is durable when it returns (an fsync'd commit), and every write that
belongs to one checkpoint happens in one transaction: either all of it is on disk or none of it.

A stream's persisted state (everything another process needs to carry on where this one
stopped) is, per stream:

* its **phase** (``StreamState.phase``), from ``sync_token``, ``in_resync`` and
  ``resync_cursor``:

  - ``new``: never synced; the first drain is a resync (the bootstrap);
  - ``incremental``: ``sync_token`` is the watermark of the last committed change;
  - ``resync``: a snapshot is being listed (bootstrap, overwrite, rejected token, or a filter
    change: ``resync_reason``); ``resync_cursor`` continues it, or None to start it over;
    ``resync_seen`` (the ids it listed so far) and ``announced`` (created events of its
    pages, and of an incremental page cut by a crash before its checkpoint, that may have
    gone out: see ``Announcement``) belong to it. A store may hold listed
    ids in memory and write them in bulk: ``resync_cursor`` is then, for a new process, where
    the written ids reach (pages after it are listed again, their ids already known);

* the **known set**: every relationship id the stream's consumers were told about and not
  told deleted, each with the last body seen (``body``), so that a deleted event found only
  by a resync still carries the relationship with its two entities;
* ``filter_fingerprint``: which filter the token or cursor was issued for (a change of the
  configured filter resyncs against the new one);
* ``orphaned_at``: when the subscription was first found missing from the configuration
  (its state is dropped after the orphan retention);
* bookkeeping: check and change times, quarantine and failure count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NamedTuple, Protocol, Self, runtime_checkable

StreamKey = tuple[str, str]
"""(subscription name, container id)."""

GroupKey = tuple[str, tuple[str, ...]]
"""(container id, the subscriptions of its streams, sorted): a check that covered all of a
container's group, stamped once (``StateStore.mark_checked``)."""

CheckStamps = dict[str, list[tuple[tuple[str, ...], float]]]
"""container id -> [(the subscriptions a stamp names, sorted; when)] (``check_stamps``)."""

OutboxStatus = Literal["pending", "delivered", "dead"]
StreamPhase = Literal["new", "incremental", "resync"]
ResyncReason = Literal["snapshot", "filter"]


class StreamCheckState(NamedTuple):
    """The fields of ``StreamState`` a scheduler restores at start-up (``stream_checks``)."""

    subscription: str
    container_id: str
    sync_token: str | None
    in_resync: int  # 0 or 1
    last_checked_at: float | None
    quarantined_until: float | None
    quarantine_reason: str | None
    failures: int


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the store remembers about one stream. Times are float epoch seconds."""

    subscription: str
    container_id: str
    sync_token: str | None = field(repr=False)  # None before the first drain completes
    resync_cursor: str | None = field(repr=False)  # token to continue a bootstrap/overwrite drain
    in_resync: bool  # a bootstrap or overwrite drain is in progress (staging set in use)
    last_checked_at: float | None
    last_changed_at: float | None
    token_updated_at: float | None
    known_count: int
    quarantined_until: float | None
    quarantine_reason: str | None
    failures: int  # consecutive; bumped by quarantine(), reset by a committed page
    filter_fingerprint: str | None = None  # the filter the token/cursor was issued for
    resync_reason: ResyncReason | None = None  # why the resync in progress runs
    orphaned_at: float | None = None  # subscription missing from the config since then

    @property
    def key(self) -> StreamKey:
        return (self.subscription, self.container_id)

    @property
    def phase(self) -> StreamPhase:
        """Where the stream stands (see the module docstring)."""
        if self.in_resync:
            return "resync"
        return "new" if self.sync_token is None else "incremental"


class KnownRelationship(NamedTuple):
    """A known id with the last body seen (the relationship JSON without isDeleted/deletedOn;
    None for ids known before bodies were kept), and the fingerprint of the query filter that
    listed it (None: listed under a domains filter, or not recorded)."""

    rel_id: str
    body: bytes | None
    filter_fingerprint: str | None = None


class PruneResult(NamedTuple):
    """What ``prune_streams`` did: streams newly found orphaned, orphans kept (within the
    retention, including the new ones) and orphans dropped (past it)."""

    orphaned: list[StreamKey]
    kept: list[StreamKey]
    dropped: list[StreamKey]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One event queued for an outbox sink (webhooks), written with the page's checkpoint."""

    sink: str
    event_id: str
    ordering_key: str  # the relationship id: events sharing it are delivered in order
    payload: bytes = field(repr=False)  # the structured-mode CloudEvent JSON
    event_time: str  # the event's RFC 3339 `time`
    created_at: float


class Announcement(NamedTuple):
    """A relationship whose created event a page is about to publish.

    Recorded before the publish and dropped by the page's checkpoint, so that after a crash in
    between the store still knows the created event may have gone out, and under which filter
    (``filter_fingerprint``; None when not recorded). A NamedTuple: one is built per created
    event on the hot path.
    """

    rel_id: str
    created_on: str
    raw: bytes  # the relationship JSON as the API sent it
    filter_fingerprint: str | None = None

    def __repr__(self) -> str:  # without ``raw``: a whole relationship
        return (f"Announcement(rel_id={self.rel_id!r}, created_on={self.created_on!r}, "
                f"filter_fingerprint={self.filter_fingerprint!r})")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox row as stored; ``row_id`` gives the insertion order."""

    row_id: int
    sink: str
    event_id: str
    ordering_key: str
    payload: bytes = field(repr=False)
    event_time: str
    created_at: float
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None
    dead_at: float | None
    dead_reason: str | None


class OutboxStats(NamedTuple):
    pending_count: int
    oldest_pending_created_at: float | None
    dead_count: int


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """What the store knows about one credential (times are Unix seconds)."""

    credential: str
    seed_fingerprint: str | None  # of the seed the stored refresh token grew from
    token_issued_at: float | None  # when the stored refresh token was issued (saved)
    last_refresh_at: float | None
    last_error: str | None  # the outcome of the last failed refresh (invalid_grant, ...)
    last_error_at: float | None


@runtime_checkable
class StateStore(Protocol):
    """What the pipeline, the scheduler and the webhook dispatcher need from durable state."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def close(self) -> None: ...

    # Refresh tokens (the client's RefreshTokenStore protocol).
    async def load_refresh_token(self, credential: str, seed_fingerprint: str) -> str | None:
        """The rotated token stored for ``credential``, only if it grew from the same seed."""
        ...

    async def save_refresh_token(
        self, credential: str, seed_fingerprint: str, refresh_token: str
    ) -> None:
        """Store the newest refresh token; durable on return."""
        ...

    async def record_credential_outcome(self, credential: str, outcome: str,
                                        now: float | None = None) -> None:
        """Remember a refresh outcome (``ok`` or the failure's name) for ``auth status``."""
        ...

    async def credential_records(self) -> list[CredentialRecord]: ...

    # Streams.
    async def get_stream(self, subscription: str, container_id: str) -> StreamState | None: ...

    async def list_streams(self) -> list[StreamState]: ...

    async def stream_checks(self) -> list[StreamCheckState]:
        """What a scheduler restores of every stream at start-up (lighter than
        ``list_streams``: 100,000 streams are read at once). ``last_checked_at`` is the
        stream's own stamp: its check time is the later of it and the ``check_stamps`` that
        name it (combined by the caller, per group: cheaper than per row here)."""
        ...

    async def check_stamps(self) -> CheckStamps:
        """Every container stamp (``mark_checked``'s ``groups``), by container."""
        ...

    async def mark_checked(self, keys: Sequence[StreamKey], now: float,
                           groups: Sequence[GroupKey] = ()) -> None:
        """Streams checked successfully at ``now``: each of ``keys``, and every stream of
        each of ``groups`` (a stamp per container; notifier.state.sqlite_checks)."""
        ...

    async def quarantine(
        self, subscription: str, container_id: str, until: float, reason: str
    ) -> None: ...

    async def clear_quarantine(
        self, subscription: str, container_id: str, *, reset_failures: bool = False
    ) -> None: ...

    async def forget_stream(self, subscription: str, container_id: str) -> bool: ...

    async def prune_streams(
        self, keep: set[StreamKey], *, now: float, retention: float,
        subscriptions: set[str] | None = None,
    ) -> PruneResult:
        """Mark streams not in ``keep`` orphaned (from ``now``), un-orphan those in it, and
        drop the orphans older than ``retention`` seconds (``subscriptions``: only streams of
        these)."""
        ...

    async def forget_subscription(self, subscription: str) -> int:
        """Drop every stream of ``subscription``; how many there were."""
        ...

    async def rename_subscription(self, old: str, new: str) -> int:
        """Move every stream of ``old`` to ``new`` (which must have none); how many moved."""
        ...

    # Known relationship ids and checkpoints.
    async def known_subset(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> set[str]: ...

    async def known_bodies(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> dict[str, bytes]:
        """The stored bodies of those of ``ids`` that are known and have one."""
        ...

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
        """The checkpoint: every change of one page in one durable transaction. During a
        resync it also forgets the announcements of ``add_ids`` and ``remove_ids``. ``bodies``
        are stored with the added ids (and with seen ones that have none yet), and so is
        ``listed_under`` (the fingerprint of the query filter that listed them, see
        ``KnownRelationship``); ``filter_fingerprint``, when given, replaces the stored one.
        ``snapshot_ends``: the resync's last page (its end follows), a hint that the ids it
        listed need not be staged durably any more."""
        ...

    async def mark_announced(
        self, subscription: str, container_id: str, items: Sequence[Announcement]
    ) -> None:
        """Record, durably and in one transaction, created events about to be published."""
        ...

    def iter_announced_missing(
        self, subscription: str, container_id: str, batch: int = 1_000
    ) -> AsyncIterator[list[Announcement]]:
        """Announcements neither known nor seen by the current resync, in batches."""
        ...

    async def begin_resync(
        self, subscription: str, container_id: str, *, cursor: str | None = None,
        reason: ResyncReason = "snapshot", filter_fingerprint: str | None = None,
    ) -> None: ...

    def iter_resync_missing(
        self, subscription: str, container_id: str, batch: int = 10_000
    ) -> AsyncIterator[list[KnownRelationship]]: ...

    async def resync_seen_subset(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> set[str]:
        """Which of ``ids`` the resync in progress has already listed."""
        ...

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
    ) -> None: ...

    # Webhook outbox.
    async def outbox_fetch_due(self, sink: str, now: float, limit: int) -> list[OutboxRow]: ...

    async def outbox_mark_delivered(self, row_ids: Sequence[int], now: float) -> None: ...

    async def outbox_reschedule(
        self, row_id: int, next_attempt_at: float, attempts: int, last_error: str | None
    ) -> None: ...

    async def outbox_settle_failed(
        self, retries: Sequence[tuple[int, float, int, str | None]],
        dead: Sequence[tuple[int, str]], now: float,
    ) -> None:
        """Reschedule and dead-letter the rows of one failed call in one transaction."""
        ...

    async def outbox_bring_forward(self, sink: str, now: float) -> int:
        """Make the rows of ``sink`` waiting out a failure backoff due now."""
        ...

    async def outbox_dead_letter(self, row_id: int, reason: str, now: float) -> None: ...

    async def outbox_stats(self, sink: str) -> OutboxStats: ...

    async def outbox_purge_delivered(self, sink: str, before: float) -> int: ...

    async def dlq_list(
        self,
        sink: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]: ...

    async def dlq_replay(
        self, sink: str | None = None, since: float | None = None, until: float | None = None
    ) -> int: ...

    async def redeliver(
        self, sink: str, since: float, until: float, *, now: float | None = None
    ) -> int: ...
