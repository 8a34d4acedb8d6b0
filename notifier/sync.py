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

The drain is a loop over the stream's state machine (``notifier.core.stream_state``): where it
starts (bootstrap, incremental, resume, forced, filter changed) and what moves it (overwrite,
a snapshot the service restarted, a rejected token or cursor, checkpoint, finish). A snapshot
restarted by the service (its horizon moved mid-resync) is told by a page that lists an id the
snapshot already listed; the resync then starts over, so the known ids the first attempt
listed and that are gone since are still reported deleted. A token or cursor the service
rejects (400) falls back to a fresh snapshot in the same drain (an exact diff).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from notifier.core import stream_state
from notifier.core.diff import (
    diff_page,
    missing_deletions,
    page_ids,
    stored_body,
    vanished_announced,
    with_stored_body,
)
from notifier.core.events import ChangeKind, Event
from notifier.core.stream_state import (
    Position,
    Transition,
    filter_fingerprint,
    matches_domains,
)
from notifier.errors import BadRequestError, ProtocolError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.base import DirectSink, OutboxSink, Sink, split_sinks
from notifier.source.client import RelationshipClient
from notifier.source.models import Relationship, SyncPage
from notifier.state.base import Announcement, KnownRelationship, OutboxItem, StateStore

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


def _still_matches(known: KnownRelationship, spec: StreamSpec) -> bool:
    """After a filter change: whether a known relationship still falls within the filter
    (so that its absence is a deletion), from its stored body (False when unknown)."""
    if spec.query is not None or known.body is None:
        return False
    entities = orjson.loads(known.body).get("entities")
    return matches_domains(entities, spec.domains) is True


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
        """Sync ``spec`` until the service reports no more data, checkpointing every batch.

        A loop over the stream's state machine (``notifier.core.stream_state``): ask for the
        page at the current position, apply the transition the answer calls for, commit.
        """
        sub, cid = spec.subscription, spec.container_id
        fingerprint = filter_fingerprint(spec.domains, spec.query)
        state = await self._store.get_stream(sub, cid)
        result = DrainResult(sync_token=state.sync_token if state else None,
                             in_resync=state.in_resync if state else False)
        pos = stream_state.start(state, fingerprint=fingerprint, force_resync=force_resync)
        if pos.transition is Transition.FILTER_CHANGED:
            log.info("the subscription's filter changed: resyncing against the new one",
                     extra={"subscription": sub, "container": cid})
        emit = spec.emit_initial or not pos.first_sync

        if pos.token is None and spec.query is not None:
            await self._begin(spec, pos, fingerprint, result)
            token = await self._bootstrap_query(client, spec, result, emit=emit, stop=stop,
                                                fingerprint=fingerprint)
            if token is None:
                return result
            # The search pages were the whole snapshot: close the resync on the query's token,
            # so what sync reports from here on is ordinary change (snapshot: false).
            await self._finish_resync(spec, pos, token, result, emit=emit, changed=True,
                                      fingerprint=fingerprint)
            pos = pos.finished(token)

        carried: SyncPage | None = None  # fetched, but it starts a snapshot: next batch
        while True:
            if stop is not None and stop.is_set():
                return result
            if carried is not None:
                page, carried = carried, None
            else:
                if pos.begins_snapshot:
                    await self._begin(spec, pos, fingerprint, result)
                    pos = replace(pos, begins_snapshot=False)
                try:
                    page = await client.sync(cid, pos.token,
                                             spec.domains if pos.token is None else None)
                except BadRequestError as exc:
                    if pos.token is None:
                        raise  # not the token's fault (a bad filter): the scheduler decides
                    log.warning("the service rejected the stream's %s (%s): resyncing from a "
                                "fresh snapshot", "cursor" if pos.resync else "token", exc,
                                extra={"subscription": sub, "container": cid})
                    pos = pos.rejected()
                    continue
            if page.overwrite and not pos.resync:
                log.info("overwrite: resyncing stream against its known ids",
                         extra={"subscription": sub, "container": cid})
                pos = pos.overwrite()
                await self._begin(spec, pos, fingerprint, result)
                pos = replace(pos, begins_snapshot=False)
            elif pos.resync and pos.token is not None and await self._restarts(spec, page, ()):
                log.info("the service started the snapshot over: resyncing from its beginning",
                         extra={"subscription": sub, "container": cid})
                pos = pos.restarted()
                await self._begin(spec, pos, fingerprint, result)
                pos = replace(pos, begins_snapshot=False)
            self._count_page(client, page, result)
            current, deleted = page.current, page.deleted
            # Pages that follow quickly join this one: one diff, one publish, one checkpoint.
            # The joined pages are diffed as one page (the same id in both lists is a creation
            # and a deletion within the window), so nothing changes but the checkpoints' count.
            # A page that starts a snapshot (an overwrite, a restart) is kept for the next batch.
            started, joined = time.monotonic(), 1
            while (page.more_data and joined < self._batch_pages
                   and time.monotonic() - started < self._batch_seconds
                   and not (stop is not None and stop.is_set())):
                try:
                    nxt = await client.sync(cid, page.next_sync_token, None)
                except BadRequestError:
                    break  # asked again, alone, after this batch's checkpoint
                if (nxt.overwrite and not pos.resync) or (
                        pos.resync and await self._restarts(spec, nxt, current)):
                    carried = nxt
                    break
                self._count_page(client, nxt, result)
                if joined == 1:
                    current, deleted = list(current), list(deleted)
                current.extend(nxt.current)
                deleted.extend(nxt.deleted)
                page, joined = nxt, joined + 1
            changed = await self._apply(spec, current, deleted, result, resync=pos.resync,
                                        emit=emit, next_token=page.next_sync_token,
                                        announce=pos.announce, fingerprint=fingerprint)
            pos = pos.checkpoint(page.next_sync_token)
            if page.more_data or carried is not None:
                continue
            if pos.resync:
                await self._finish_resync(spec, pos, page.next_sync_token, result, emit=emit,
                                          changed=changed, fingerprint=fingerprint)
                pos = pos.finished(page.next_sync_token)
            result.completed = True
            return result

    async def _begin(self, spec: StreamSpec, pos: Position, fingerprint: str,
                     result: DrainResult) -> None:
        """Persist the start (or restart) of a snapshot: the staging set is emptied."""
        await self._store.begin_resync(spec.subscription, spec.container_id, cursor=None,
                                       reason=pos.reason or "snapshot",
                                       filter_fingerprint=fingerprint)
        result.in_resync = True

    async def _restarts(self, spec: StreamSpec, page: SyncPage,
                        batch: Sequence[Relationship]) -> bool:
        """Whether a snapshot page lists an id the current snapshot already listed (in a
        committed page, or earlier in the batch in hand): the service started it over."""
        ids = [r.id for r in page.current]
        if not ids:
            return False
        if batch and not {r.id for r in batch}.isdisjoint(ids):
            return True
        return bool(await self._store.resync_seen_subset(spec.subscription,
                                                         spec.container_id, ids))

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
        fingerprint: str | None = None,
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
            outbox=outbox, bodies=_bodies(current, d.add_ids, resync),
            filter_fingerprint=fingerprint, changed=changed, now=now,
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
        self, spec: StreamSpec, pos: Position, token: str, result: DrainResult, *, emit: bool,
        changed: bool, fingerprint: str,
    ) -> None:
        """Deleted events for known ids the resync did not list, created and deleted events
        for announced ones it did not list, then the final token.

        After a filter change, a known id the new snapshot did not list has either left the
        filter (forgotten without an event) or been deleted (a deleted event): its stored body
        tells which for a domains filter; a query's matching cannot be told here, so there
        every such id is forgotten.
        """
        sub, cid = spec.subscription, spec.container_id
        forgotten = 0
        while batch := await _first(self._store.iter_resync_missing(sub, cid,
                                                                   RESYNC_DELETE_BATCH)):
            now = self._clock()
            deletions = batch
            if pos.reason == "filter":
                deletions = [k for k in batch if _still_matches(k, spec)]
                forgotten += len(batch) - len(deletions)
            events = (
                missing_deletions(subscription=sub, container_id=cid, missing=deletions,
                                  seen_at=rfc3339(now), project_name=spec.project_name)
                if emit else []
            )
            await self._settle(spec, token, events, result,
                               remove_ids=[k.rel_id for k in batch], created=0,
                               deleted=len(deletions), now=now)
            changed = True
        if forgotten:
            log.info("filter change: %d relationship(s) no longer match the filter and are "
                     "forgotten (no deleted events)", forgotten,
                     extra={"subscription": sub, "container": cid})
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
        await self._store.commit_page(
            sub, cid, next_token=token, resync_cursor=None, in_resync=False, add_ids=(),
            remove_ids=(), filter_fingerprint=fingerprint, changed=changed, now=now)
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
        fingerprint: str,
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
            await self._apply(spec, live, [], result, resync=True, emit=emit, next_token=None,
                              fingerprint=fingerprint)
            continuation = page.continuation_token
            if not continuation:
                break
        if not sync_token:
            raise ProtocolError("search returned no page.syncToken", endpoint="search")
        return sync_token
