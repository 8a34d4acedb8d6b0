"""Drain one stream: sync pages → diff → sinks → checkpoint (the writing half, diff, publish
and checkpoint, is ``PageWriter`` in notifier.checkpoint).

A stream is one (subscription, container). A drain follows ``moreData`` and ``nextSyncToken``
until the service has nothing more, and checkpoints after every page, only once every sink of
the subscription has accepted that page's events (direct sinks acked, outbox rows written in the
checkpoint's own transaction). With ``batch_pages`` > 1, pages that arrive in quick succession
are joined (up to that many, within ``batch_seconds``) and diffed, published and checkpointed as
one: the per-page costs (a durable transaction, a broker round trip) are paid once per batch;
a crash redelivers at most one batch. Bootstrap (no token) and ``overwrite`` resyncs are *resync*
drains: the store stages every id the service lists and, once the last page is in, the known ids
that were not listed become deleted events. Every page records its created events as
*announced* before publishing them to direct sinks (the checkpoint forgets them again), because
a crash in between may be followed by a different snapshot instead of the same page again (none
saved yet, a token or cursor rejected, a snapshot the service restarts): an announced
relationship that the new snapshot no longer lists is then announced again and deleted when the
resync ends (cluster mode needs none: a page's events commit with its checkpoint, see
notifier.cluster.syncer). A stop request between pages abandons the drain without checkpointing
anything unfinished.

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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from notifier.checkpoint import PageWriter
from notifier.core import stream_state
from notifier.core.stream_state import (
    Position,
    Transition,
    filter_fingerprint,
)
from notifier.errors import BadRequestError, ProtocolError
from notifier.metrics import Metrics
from notifier.source.client import RelationshipClient
from notifier.source.models import Relationship, SyncPage
from notifier.state.base import StateStore
from notifier.stream import DrainResult, StreamSpec

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.5  # a page joins the previous ones' checkpoint only within this time


def _merged(pages: Sequence[SyncPage]) -> tuple[list[Relationship], list[Relationship]]:
    """The current and deleted relationships of joined pages, in page order."""
    if len(pages) == 1:
        return pages[0].current, pages[0].deleted
    return ([r for p in pages for r in p.current], [r for p in pages for r in p.deleted])


def _check_advances(token: str | None, page: SyncPage) -> None:
    """A page that says ``moreData`` must lead somewhere: handing back the very token it was
    asked with would loop for ever (paying a request each time, holding a drain slot). It is a
    malformed answer, so the stream is quarantined like one, and the others carry on."""
    if token is not None and page.more_data and page.next_sync_token == token:
        raise ProtocolError(
            "sync token does not advance: moreData is true but the next token is the one "
            "just used", endpoint="sync")


class StreamSyncer(PageWriter):
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
        super().__init__(store, metrics=metrics, clock=clock, on_outbox=on_outbox)
        self._batch_pages = batch_pages
        self._batch_seconds = batch_seconds

    async def drain(
        self,
        client: RelationshipClient,
        spec: StreamSpec,
        *,
        stop: asyncio.Event | None = None,
        force_resync: bool = False,
        max_pages: int | None = None,
        check: bool = False,
    ) -> DrainResult:
        """Sync ``spec`` until the service reports no more data, checkpointing every batch.

        A loop over the stream's state machine (``notifier.core.stream_state``): ask for the
        page at the current position, apply the transition the answer calls for, commit.

        With ``max_pages`` the drain returns (not completed) at the first checkpoint after that
        many sync pages: one *turn*. The next call resumes where it stopped (the stored token or
        resync cursor), so a long drain can give way to others between turns. A query
        subscription's search bootstrap is not split: it has no cursor to resume from.

        With ``check`` the drain is the stream's check (the scheduler syncs it directly
        instead of asking syncStatus): its first page is asked with the budget's ``status``
        priority, like the syncStatus call it replaces. An empty page is checkpointed like any
        other: its ``nextSyncToken`` is stored and the stream counts as checked.
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

        # Fetched pages not yet committed: they start a snapshot (an overwrite, a restart),
        # or follow such a page in the batch that found it. They open the next batch.
        carried: deque[SyncPage] = deque()
        while True:
            if pos.token is None and spec.query is not None and not carried:
                # A query's snapshot is its search (a bootstrap, a filter change, a token the
                # service rejected): sync without a token would list the whole container.
                await self._begin(spec, pos, fingerprint, result)
                token = await self._bootstrap_query(client, spec, result, emit=emit,
                                                    stop=stop, fingerprint=fingerprint)
                if token is None:
                    return result
                # The search pages were the whole snapshot: close the resync on the query's
                # token, so what sync reports from here on is ordinary change (snapshot: false).
                await self._finish_resync(spec, pos, token, result, emit=emit, changed=True,
                                          fingerprint=fingerprint)
                pos = pos.finished(token)
            if stop is not None and stop.is_set():
                return result
            if max_pages is not None and result.pages >= max_pages:
                return result  # this turn is over; the next resumes from the checkpoint
            if carried:
                page = carried.popleft()
            else:
                if pos.begins_snapshot:
                    await self._begin(spec, pos, fingerprint, result)
                    pos = replace(pos, begins_snapshot=False)
                try:
                    domains = spec.domains if pos.token is None else None
                    if check:
                        check = False
                        page = await client.sync(cid, pos.token, domains, priority="status")
                    else:
                        page = await client.sync(cid, pos.token, domains)
                    _check_advances(pos.token, page)
                except BadRequestError as exc:
                    if pos.token is None:
                        raise  # not the token's fault (a bad filter): the scheduler decides
                    log.warning("the service rejected the stream's %s (%s): resyncing from a "
                                "fresh snapshot", "cursor" if pos.resync else "token", exc,
                                extra={"subscription": sub, "container": cid})
                    pos = pos.rejected()
                    continue
            # Whether the first page may restart the snapshot (asked with a cursor of it).
            first_may_restart = pos.resync and pos.token is not None
            if page.overwrite and not pos.resync:
                log.info("overwrite: resyncing stream against its known ids",
                         extra={"subscription": sub, "container": cid})
                pos = pos.overwrite()
                await self._begin(spec, pos, fingerprint, result)
                pos = replace(pos, begins_snapshot=False)
            pages = await self._join_following(client, spec, pos, page, carried, result,
                                               max_pages=max_pages, stop=stop)
            if pos.resync:
                pos, pages = await self._cut_at_restart(spec, pos, pages, carried, result,
                                                        first=first_may_restart,
                                                        fingerprint=fingerprint)
            page = pages[-1]
            current, deleted = _merged(pages)
            for counted in pages:
                self._count_page(client, counted, result)
            changed = await self._apply(spec, current, deleted, result, resync=pos.resync,
                                        emit=emit, next_token=page.next_sync_token,
                                        fingerprint=fingerprint,
                                        snapshot_ends=not (page.more_data or carried))
            pos = pos.checkpoint(page.next_sync_token)
            if page.more_data or carried:
                continue
            if pos.resync:
                await self._finish_resync(spec, pos, page.next_sync_token, result, emit=emit,
                                          changed=changed, fingerprint=fingerprint)
                pos = pos.finished(page.next_sync_token)
            result.completed = True
            return result

    async def _join_following(
        self, client: RelationshipClient, spec: StreamSpec, pos: Position, page: SyncPage,
        carried: deque[SyncPage], result: DrainResult, *, max_pages: int | None,
        stop: asyncio.Event | None,
    ) -> list[SyncPage]:
        """``page`` and the pages that follow it quickly (``carried`` ones first), to be diffed,
        published and checkpointed as one. The joined pages are diffed as one page (the same id
        in both lists is a creation and a deletion within the window), so nothing changes but
        the checkpoints' count. A page that starts a snapshot (an overwrite, a page of a resync
        listing an id the batch already listed: the service restarted it) is left at the front
        of ``carried``: it opens the next batch."""
        pages = [page]
        listed = {r.id for r in page.current} if pos.resync else set()
        started = time.monotonic()
        while (page.more_data and len(pages) < self._batch_pages
               and (max_pages is None or result.pages + len(pages) < max_pages)
               and time.monotonic() - started < self._batch_seconds
               and not (stop is not None and stop.is_set())):
            if carried:
                nxt = carried.popleft()
            else:
                try:
                    nxt = await client.sync(spec.container_id, page.next_sync_token, None)
                    _check_advances(page.next_sync_token, nxt)
                except BadRequestError:
                    break  # asked again, alone, after this batch's checkpoint
            ids = [r.id for r in nxt.current] if pos.resync else []
            if (nxt.overwrite and not pos.resync) or (
                    pos.resync and not listed.isdisjoint(ids)):
                carried.appendleft(nxt)
                break
            listed.update(ids)
            pages.append(nxt)
            page = nxt
        return pages

    async def _cut_at_restart(
        self, spec: StreamSpec, pos: Position, pages: list[SyncPage],
        carried: deque[SyncPage], result: DrainResult, *, first: bool, fingerprint: str,
    ) -> tuple[Position, list[SyncPage]]:
        """A resync batch, checked for a snapshot the service started over (one look at the
        ids committed pages of this snapshot listed, for the whole batch): restarted at the
        first page, the resync starts over with the batch; further in, the batch ends before
        the restarting page, which opens the next batch (back at the front of ``carried``)."""
        restart = await self._restart_at(spec, pages, first=first)
        if restart == 0:
            log.info("the service started the snapshot over: resyncing from its beginning",
                     extra={"subscription": spec.subscription, "container": spec.container_id})
            pos = pos.restarted()
            await self._begin(spec, pos, fingerprint, result)
            pos = replace(pos, begins_snapshot=False)
        elif restart is not None:
            carried.extendleft(reversed(pages[restart:]))
            pages = pages[:restart]
        return pos, pages

    async def _begin(self, spec: StreamSpec, pos: Position, fingerprint: str,
                     result: DrainResult) -> None:
        """Persist the start (or restart) of a snapshot: the staging set is emptied."""
        await self._store.begin_resync(spec.subscription, spec.container_id, cursor=None,
                                       reason=pos.reason or "snapshot",
                                       filter_fingerprint=fingerprint)
        result.in_resync = True

    async def _restart_at(self, spec: StreamSpec, pages: Sequence[SyncPage], *,
                          first: bool) -> int | None:
        """The index of the first of ``pages`` (a batch of one snapshot, none repeating an id
        of an earlier one) listing an id that committed pages of the current snapshot already
        listed: the service started it over there. The first page counts only if ``first``
        (it was asked with a cursor of this snapshot); a restart at the first page makes the
        rest of the batch belong to the new snapshot, which has listed nothing yet."""
        ids = [r.id for p in pages[0 if first else 1:] for r in p.current]
        if not ids:
            return None
        seen = await self._store.resync_seen_subset(spec.subscription, spec.container_id, ids)
        if not seen:
            return None
        # Every id asked is in one of the pages asked about: there is a first.
        return next(i for i, p in enumerate(pages)
                    if (i > 0 or first) and not seen.isdisjoint(r.id for r in p.current))

    def _count_page(self, client: RelationshipClient, page: SyncPage, result: DrainResult
                    ) -> None:
        result.pages += 1
        self._metrics.page_synced(
            client.credential_name, page.overwrite,
            len(page.current) + len(page.deleted), page.size_bytes,
        )

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
