"""Drain one stream: sync pages → diff → sinks → checkpoint.

A stream is one (subscription, container). A drain follows ``moreData`` and ``nextSyncToken``
until the service has nothing more, and checkpoints after every page, only once every sink of
the subscription has accepted that page's events (direct sinks acked, outbox rows written in the
checkpoint's own transaction). With ``batch_pages`` > 1, pages that arrive in quick succession
are joined (up to that many, within ``batch_seconds``) and diffed, published and checkpointed as
one: the per-page costs (a durable transaction, a broker round trip) are paid once per batch;
a crash redelivers at most one batch. Bootstrap (no token) and ``overwrite`` resyncs are *resync*
drains: the store stages every id the service lists and, once the last page is in, the known ids
that were not listed become deleted events. The pages of a resync before its first saved
cursor record their created events as *announced* before publishing them (the checkpoint forgets
them again), because a crash in between restarts from a fresh snapshot: an announced
relationship that the new snapshot no longer lists is then announced again and deleted when the
resync ends. Later pages need no such record: a restart resumes from the saved cursor and the
service sends the same snapshot page again. A stop
request between pages abandons the drain without checkpointing anything unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from notifier.core.diff import (
    diff_page,
    missing_deletions,
    page_ids,
    stored_body,
    vanished_announced,
    with_stored_body,
)
from notifier.core.events import ChangeKind, Event
from notifier.errors import ProtocolError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.base import DirectSink, OutboxSink, Sink, split_sinks
from notifier.source.client import RelationshipClient
from notifier.source.models import Relationship, SyncPage
from notifier.state.base import Announcement, OutboxItem, StateStore

log = logging.getLogger(__name__)

RESYNC_DELETE_BATCH = 5_000
BATCH_SECONDS = 0.5  # a page joins the previous ones' checkpoint only within this time
T = TypeVar("T")

LAG_SAMPLES = 16  # detection-lag observations per page at most
ANNOUNCED_BATCH = 1_000  # announcements carry the relationship's JSON: smaller batches


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """Everything the drain needs to know about one stream, from the configuration."""

    subscription: str
    container_id: str
    credentials: tuple[str, ...]
    sinks: tuple[Sink, ...]
    domains: tuple[str, ...] | None = None
    query: Mapping[str, str] | None = None
    emit_initial: bool = True
    project_name: str | None = None  # hub subscriptions: the project's name, in event data
    direct: tuple[DirectSink, ...] = field(init=False, repr=False)
    """``sinks`` the pipeline publishes to before each checkpoint."""
    outbox: tuple[OutboxSink, ...] = field(init=False, repr=False)
    """``sinks`` whose events go to the state store's outbox with each checkpoint."""

    def __post_init__(self) -> None:
        direct, outbox = split_sinks(self.sinks)
        object.__setattr__(self, "direct", direct)
        object.__setattr__(self, "outbox", outbox)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subscription, self.container_id)


@dataclass(slots=True)
class DrainResult:
    """What a drain did, and the stream's state in the store once it returned."""

    pages: int = 0
    created: int = 0
    deleted: int = 0
    completed: bool = False  # False when a stop request interrupted the drain
    sync_token: str | None = None  # the stream's committed sync token
    in_resync: bool = False  # a resync is in progress (begun and not finished)
    committed_at: float | None = None  # time of the drain's last checkpoint, if any
    """A checkpoint also stamps the stream checked and lifts its quarantine and failures."""

    def committed(self, now: float, *, token: str | None, in_resync: bool) -> None:
        """Note a checkpoint: ``token`` None keeps the committed one (mid-resync cursor)."""
        if token is not None:
            self.sync_token = token
        self.in_resync = in_resync
        self.committed_at = now


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def _bodies(current: Sequence[Relationship], add_ids: Sequence[str], resync: bool
            ) -> dict[str, bytes]:
    """Bodies to store: of the added ids, and on a resync page of every listed one (known
    ids without a body get it)."""
    if resync:
        return {r.id: stored_body(r) for r in current}
    added = set(add_ids)
    return {r.id: stored_body(r) for r in current if r.id in added}


async def _first(batches: AsyncIterator[list[T]]) -> list[T]:
    """The first batch of an async batch iterator (empty when there is none).

    Each end-of-resync batch is checkpointed before the next is asked for, so the iterator is
    asked afresh every time rather than walked while the table under it changes.
    """
    async for batch in batches:
        return batch
    return []


class Publisher:
    """Hands a page's events to every sink of a subscription; all must accept."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock

    async def _timed(self, sink: DirectSink, events: Sequence[Event]) -> None:
        """One sink's publish, counted and timed here for every sink alike."""
        started = time.perf_counter()
        try:
            await sink.publish(events)
        except BaseException:
            self._metrics.events_published(sink.name, "error", len(events))
            raise
        self._metrics.events_published(sink.name, "ok", len(events))
        self._metrics.publish_latency(sink.name, time.perf_counter() - started)

    async def publish(
        self, events: Sequence[Event], *, direct: Sequence[DirectSink] = (),
        outbox: Sequence[OutboxSink] = (),
    ) -> list[OutboxItem]:
        """Publish to the ``direct`` sinks; return the outbox rows for the ``outbox`` sinks."""
        if not events:
            return []
        results = await asyncio.gather(
            *(self._timed(s, events) for s in direct), return_exceptions=True
        )
        failure: BaseException | None = None
        for res in results:
            if isinstance(res, BaseException) and failure is None:
                failure = res
        if failure is not None:
            if isinstance(failure, SinkError):
                raise failure
            if isinstance(failure, Exception):
                raise SinkError(f"unexpected error: {failure!r}") from failure
            raise failure
        if not outbox:
            return []
        now = self._clock()
        payloads = [e.structured_json() for e in events]  # once, whatever the sink count
        return [
            OutboxItem(sink=sink.name, event_id=e.id, ordering_key=e.subject, payload=payload,
                       event_time=e.time, created_at=now)
            for sink in outbox
            for e, payload in zip(events, payloads, strict=True)
        ]

    def observe_lag(self, events: Sequence[Event]) -> None:
        """Detection lag of the page's change events, sampled: at most LAG_SAMPLES evenly
        spread ones per page (a histogram observation costs more than building the event)."""
        now = self._clock()
        changes = [e for e in events if not e.snapshot]
        step = max(1, -(-len(changes) // LAG_SAMPLES))
        for e in changes[::step]:
            t = parse_time(e.time)
            if t is not None:
                self._metrics.detection_lag(max(0.0, now - t))


class StreamSyncer:
    """Runs drains against the store; one instance serves every stream."""

    def __init__(
        self,
        store: StateStore,
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        on_outbox: Callable[[], None] | None = None,
        batch_pages: int = 1,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        """``batch_pages`` > 1 lets consecutive pages that arrive within ``batch_seconds`` of
        the first share one publish and one checkpoint (see ``drain``)."""
        if batch_pages < 1:
            raise ValueError("batch_pages must be >= 1")
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._publisher = Publisher(metrics, clock)
        self._on_outbox = on_outbox
        self._batch_pages = batch_pages
        self._batch_seconds = batch_seconds

    async def drain(
        self,
        client: RelationshipClient,
        spec: StreamSpec,
        *,
        stop: asyncio.Event | None = None,
        force_resync: bool = False,
    ) -> DrainResult:
        """Sync ``spec`` until the service reports no more data, checkpointing every page."""
        state = await self._store.get_stream(spec.subscription, spec.container_id)
        result = DrainResult(sync_token=state.sync_token if state else None,
                             in_resync=state.in_resync if state else False)
        token = state.sync_token if state else None
        resync = False
        # A resync with a saved cursor resumes from it after a crash, and the service replays
        # the same snapshot page; only pages before the first saved cursor need announcing.
        cursor_saved = False
        first_sync = state is None or (state.sync_token is None and not state.in_resync)
        if state is not None and state.in_resync:
            resync = True
            token = state.resync_cursor
            cursor_saved = token is not None
            first_sync = state.sync_token is None
            if token is None:
                # No cursor: the snapshot starts over (a first page never checkpointed, or a
                # search bootstrap), so what the cut attempt saw no longer counts as listed.
                await self._begin_resync(spec, result)
        elif force_resync or token is None:
            resync = True
            token = None
            await self._begin_resync(spec, result)
        emit = spec.emit_initial or not first_sync

        if token is None and spec.query is not None:
            token = await self._bootstrap_query(client, spec, result, emit=emit, stop=stop)
            if token is None:
                return result
            # The search pages were the whole snapshot: close the resync on the query's token,
            # so what sync reports from here on is ordinary change (snapshot: false).
            await self._finish_resync(spec, token, result, emit=emit, changed=True)
            resync = False

        carried: SyncPage | None = None  # fetched, but it starts an overwrite: next batch
        while True:
            if stop is not None and stop.is_set():
                return result
            page = carried or await client.sync(
                spec.container_id, token, spec.domains if token is None else None
            )
            carried = None
            if page.overwrite and not resync:
                log.info(
                    "overwrite: resyncing stream against its known ids",
                    extra={"subscription": spec.subscription, "container": spec.container_id},
                )
                resync = True
                cursor_saved = False
                await self._begin_resync(spec, result)
            self._count_page(client, page, result)
            current, deleted = page.current, page.deleted
            # Pages that follow quickly join this one: one diff, one publish, one checkpoint.
            # The joined pages are diffed as one page (the same id in both lists is a creation
            # and a deletion within the window), so nothing changes but the checkpoints' count.
            started, joined = time.monotonic(), 1
            while (page.more_data and joined < self._batch_pages
                   and time.monotonic() - started < self._batch_seconds
                   and not (stop is not None and stop.is_set())):
                nxt = await client.sync(spec.container_id, page.next_sync_token, None)
                if nxt.overwrite and not resync:
                    carried = nxt
                    break
                self._count_page(client, nxt, result)
                if joined == 1:
                    current, deleted = list(current), list(deleted)
                current.extend(nxt.current)
                deleted.extend(nxt.deleted)
                page, joined = nxt, joined + 1
            changed = await self._apply(spec, current, deleted, result, resync=resync, emit=emit,
                                        next_token=page.next_sync_token,
                                        announce=resync and not cursor_saved)
            cursor_saved = resync
            token = page.next_sync_token
            if page.more_data or carried is not None:
                continue
            if resync:
                await self._finish_resync(spec, token, result, emit=emit, changed=changed)
            result.completed = True
            return result

    async def _begin_resync(self, spec: StreamSpec, result: DrainResult) -> None:
        await self._store.begin_resync(spec.subscription, spec.container_id)
        result.in_resync = True

    def _count_page(self, client: RelationshipClient, page: SyncPage, result: DrainResult
                    ) -> None:
        result.pages += 1
        self._metrics.page_synced(
            client.credential_name, page.overwrite,
            len(page.current) + len(page.deleted), page.size_bytes,
        )

    async def _apply(
        self,
        spec: StreamSpec,
        current: list[Relationship],
        deleted: list[Relationship],
        result: DrainResult,
        *,
        resync: bool,
        emit: bool,
        next_token: str | None,
        announce: bool = True,
    ) -> bool:
        """Diff, publish and checkpoint one page; returns whether anything changed."""
        ids = page_ids(current, deleted)
        known = (
            await self._store.known_subset(spec.subscription, spec.container_id, ids)
            if ids else set()
        )
        deleted = await self._complete_deleted(spec, deleted, known)
        now = self._clock()
        d = diff_page(
            subscription=spec.subscription, container_id=spec.container_id,
            project_name=spec.project_name,
            current=current, deleted=deleted, known=known, resync=resync, emit=emit,
            seen_at=rfc3339(now),
        )
        if resync and announce:
            await self._announce(spec, d.events)
        outbox = await self._publisher.publish(d.events, direct=spec.direct,
                                               outbox=spec.outbox)
        changed = bool(d.add_ids or d.remove_ids or d.events)
        # Mid-resync the token is only a cursor: the final token is committed by finish_resync.
        assert resync or next_token is not None
        await self._store.commit_page(
            spec.subscription, spec.container_id,
            next_token=None if resync else next_token,
            resync_cursor=next_token if resync else None, in_resync=resync,
            add_ids=d.add_ids, remove_ids=d.remove_ids, seen_ids=d.seen_ids,
            outbox=outbox, bodies=_bodies(current, d.add_ids, resync), changed=changed,
            now=now,
        )
        result.committed(now, token=None if resync else next_token, in_resync=resync)
        self._after_commit(d.events, result, outboxed=bool(outbox), created=d.created,
                           deleted=d.deleted, snapshot=resync)
        return changed

    async def _complete_deleted(
        self, spec: StreamSpec, deleted: list[Relationship], known: set[str]
    ) -> list[Relationship]:
        """Deleted relationships the API sent without their entities get them from the body
        stored with the known id (a deleted event always names both entities)."""
        bare = [r.id for r in deleted if r.id in known and not r.raw.get("entities")]
        if not bare:
            return deleted
        stored = await self._store.known_bodies(spec.subscription, spec.container_id, bare)
        return [with_stored_body(r, stored[r.id]) if r.id in stored else r for r in deleted]

    async def _announce(self, spec: StreamSpec, events: Sequence[Event]) -> None:
        """Durably note the created events of a resync page before any leaves (see module doc).

        Outbox sinks receive nothing before the checkpoint, so only direct sinks need it.
        """
        if not spec.direct:
            return
        items = [
            Announcement(e.subject, e.time, orjson.dumps(e.data["relationship"]))
            for e in events if e.kind is ChangeKind.CREATED
        ]
        if items:
            await self._store.mark_announced(spec.subscription, spec.container_id, items)

    def _after_commit(
        self, events: Sequence[Event], result: DrainResult, *, outboxed: bool, created: int,
        deleted: int, snapshot: bool,
    ) -> None:
        result.created += created
        result.deleted += deleted
        self._metrics.checkpoint_committed()
        if created:
            self._metrics.events_detected("created", snapshot, created)
        if deleted:
            self._metrics.events_detected("deleted", snapshot, deleted)
        self._publisher.observe_lag(events)
        if outboxed and self._on_outbox is not None:
            self._on_outbox()

    async def _finish_resync(
        self, spec: StreamSpec, token: str, result: DrainResult, *, emit: bool, changed: bool
    ) -> None:
        """Deleted events for known ids the resync did not list, created and deleted events
        for announced ones it did not list, then the final token."""
        sub, cid = spec.subscription, spec.container_id
        while batch := await _first(self._store.iter_resync_missing(sub, cid,
                                                                   RESYNC_DELETE_BATCH)):
            now = self._clock()
            events = (
                missing_deletions(subscription=sub, container_id=cid, missing=batch,
                                  seen_at=rfc3339(now), project_name=spec.project_name)
                if emit else []
            )
            await self._settle(spec, token, events, result,
                               remove_ids=[k.rel_id for k in batch], created=0,
                               deleted=len(batch), now=now)
            changed = True
        while gone := await _first(self._store.iter_announced_missing(sub, cid,
                                                                     ANNOUNCED_BATCH)):
            now = self._clock()
            rels = [
                Relationship(id=a.rel_id, created_on=a.created_on, is_deleted=False,
                             deleted_on=None, raw=orjson.loads(a.raw))
                for a in gone
            ]
            events = (
                vanished_announced(subscription=sub, container_id=cid, relationships=rels,
                                   seen_at=rfc3339(now), project_name=spec.project_name)
                if emit else []
            )
            # None of them is known; listing them as removed settles (forgets) their
            # announcements.
            ids = [a.rel_id for a in gone]
            await self._settle(spec, token, events, result, remove_ids=ids, created=len(ids),
                               deleted=len(ids), now=now)
            changed = True
        now = self._clock()
        await self._store.finish_resync(sub, cid, next_token=token, changed=changed, now=now)
        result.committed(now, token=token, in_resync=False)

    async def _settle(
        self, spec: StreamSpec, token: str, events: Sequence[Event], result: DrainResult, *,
        remove_ids: Sequence[str], created: int, deleted: int, now: float,
    ) -> None:
        """Publish end-of-resync events, then checkpoint the ids they settle (cursor kept)."""
        outbox = await self._publisher.publish(events, direct=spec.direct, outbox=spec.outbox)
        await self._store.commit_page(
            spec.subscription, spec.container_id, next_token=None, resync_cursor=token,
            in_resync=True, add_ids=(), remove_ids=remove_ids, outbox=outbox, changed=True,
            now=now,
        )
        result.committed(now, token=None, in_resync=True)
        self._after_commit(events, result, outboxed=bool(outbox), created=created,
                           deleted=deleted, snapshot=True)

    async def _bootstrap_query(
        self,
        client: RelationshipClient,
        spec: StreamSpec,
        result: DrainResult,
        *,
        emit: bool,
        stop: asyncio.Event | None,
    ) -> str | None:
        """First sync of a query subscription: page through search, keep its syncToken.

        The token of the first page marks the query's starting point: changes made while paging
        come again from sync and are recognised by their ids, so none is lost.
        """
        assert spec.query is not None
        sync_token: str | None = None
        continuation: str | None = None
        while True:
            if stop is not None and stop.is_set():
                return None
            page = await client.search(spec.container_id, spec.query, continuation)
            if sync_token is None:
                sync_token = page.sync_token
            live = [r for r in page.relationships if not r.is_deleted]
            result.pages += 1
            # No cursor: a crash here restarts the search; known ids keep it from re-emitting.
            await self._apply(spec, live, [], result, resync=True, emit=emit, next_token=None)
            continuation = page.continuation_token
            if not continuation:
                break
        if not sync_token:
            raise ProtocolError("search returned no page.syncToken", endpoint="search")
        return sync_token
