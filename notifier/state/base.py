"""The state store interface: sync checkpoints, known ids, announcements, refresh tokens, outbox.

The unit of sync state is a *stream*: (subscription name, container id), one sync token each.
Every method that writes is durable when it returns (an fsync'd commit), and every write that
belongs to one checkpoint happens in one transaction: either all of it is on disk or none of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, NamedTuple, Protocol, Self, runtime_checkable

StreamKey = tuple[str, str]
"""(subscription name, container id)."""

OutboxStatus = Literal["pending", "delivered", "dead"]


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

    @property
    def key(self) -> StreamKey:
        return (self.subscription, self.container_id)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One event queued for an outbox sink (webhooks), written with the page's checkpoint."""

    sink: str
    event_id: str
    ordering_key: str  # the relationship id: events sharing it are delivered in order
    payload: bytes = field(repr=False)  # the structured-mode CloudEvent JSON
    event_time: str  # the event's RFC 3339 `time`
    created_at: float


@dataclass(frozen=True, slots=True)
class Announcement:
    """A relationship whose created event a resync page is about to publish.

    Recorded before the publish and dropped by the page's checkpoint, so that after a crash in
    between the store still knows the created event may have gone out.
    """

    rel_id: str
    created_on: str
    raw: bytes = field(repr=False)  # the relationship JSON as the API sent it


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

    # Streams.
    async def get_stream(self, subscription: str, container_id: str) -> StreamState | None: ...

    async def list_streams(self) -> list[StreamState]: ...

    async def mark_checked(self, keys: Sequence[StreamKey], now: float) -> None: ...

    async def quarantine(
        self, subscription: str, container_id: str, until: float, reason: str
    ) -> None: ...

    async def clear_quarantine(
        self, subscription: str, container_id: str, *, reset_failures: bool = False
    ) -> None: ...

    async def forget_stream(self, subscription: str, container_id: str) -> bool: ...

    async def prune_streams(self, keep: set[StreamKey]) -> list[StreamKey]: ...

    # Known relationship ids and checkpoints.
    async def known_subset(
        self, subscription: str, container_id: str, ids: Sequence[str]
    ) -> set[str]: ...

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
        changed: bool,
        now: float,
    ) -> None:
        """The checkpoint: every change of one page in one durable transaction. During a
        resync it also forgets the announcements of ``add_ids`` and ``remove_ids``."""
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
        self, subscription: str, container_id: str, *, cursor: str | None = None
    ) -> None: ...

    def iter_resync_missing(
        self, subscription: str, container_id: str, batch: int = 10_000
    ) -> AsyncIterator[list[str]]: ...

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
