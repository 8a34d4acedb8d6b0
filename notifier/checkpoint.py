"""Applying what a drain fetched: diff a page, publish it, checkpoint it; end a resync.

``PageWriter`` is the half of ``StreamSyncer`` (notifier.sync) that writes: every method
publishes to the sinks first and commits to the store after, so a checkpoint never runs ahead of
what the sinks accepted; ``DrainResult.committed`` records each checkpoint for the scheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

import orjson

from notifier.core.diff import (
    diff_page,
    missing_deletions,
    page_ids,
    stored_body,
    vanished_announced,
    with_stored_body,
)
from notifier.core.events import CREATED, Event
from notifier.core.stream_state import (
    Position,
    matches_domains,
)
from notifier.metrics import Metrics
from notifier.publisher import Publisher
from notifier.source.models import Relationship
from notifier.state.base import Announcement, StateStore
from notifier.stream import DrainResult, StreamSpec

log = logging.getLogger("notifier.sync")

RESYNC_DELETE_BATCH = 5_000
ANNOUNCED_BATCH = 1_000  # announcements carry the relationship's JSON: smaller batches


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _within(spec: StreamSpec, fingerprint: str, listed_under: str | None,
            body: bytes | None) -> bool:
    """After a filter change: whether a relationship the new snapshot did not list falls
    within the new filter, so that its absence is a deletion (else it may only have left the
    filter). Listed (or announced) under this very filter, it matched it and still does: a
    filter's matching depends only on the relationship's entities and creation time, which
    never change. Otherwise a domains filter is checked against the stored body; a query
    cannot be evaluated here (False)."""
    if listed_under == fingerprint:
        return True
    if spec.query is not None or body is None:
        return False
    return matches_domains(orjson.loads(body).get("entities"), spec.domains) is True


class _Bodies(Mapping[str, bytes]):
    """The bodies the store may keep with a page's ids (``stored_body``), serialised only when
    asked for: the added ids' always, a listed known id's only if it lacks one."""

    def __init__(self, current: Sequence[Relationship]) -> None:
        self._rels = {r.id: r for r in current}

    def __getitem__(self, rel_id: str) -> bytes:
        return stored_body(self._rels[rel_id])

    def __contains__(self, rel_id: object) -> bool:
        return rel_id in self._rels

    def __iter__(self) -> Iterator[str]:
        return iter(self._rels)

    def __len__(self) -> int:
        return len(self._rels)


class PageWriter:
    """Diffs, publishes and checkpoints pages for ``StreamSyncer``."""

    # Whether a page's created events for direct sinks are announced before the publish
    # (``_announce``): they may go out while the checkpoint that covers them never commits.
    ANNOUNCES = True

    def __init__(
        self,
        store: StateStore,
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._publisher = Publisher(metrics, clock)
        self._on_outbox = on_outbox

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
        fingerprint: str | None = None,
        snapshot_ends: bool = False,
    ) -> bool:
        """Diff, publish and checkpoint one page; returns whether anything changed.
        ``snapshot_ends``: a resync's last page (the end of the resync follows)."""
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
        await self._announce(spec, d.events, fingerprint)
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
            outbox=outbox, bodies=_Bodies(current), filter_fingerprint=fingerprint,
            listed_under=fingerprint if spec.query is not None else None,
            changed=changed, now=now, snapshot_ends=resync and snapshot_ends,
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

    async def _announce(self, spec: StreamSpec, events: Sequence[Event],
                        fingerprint: str | None) -> None:
        """Durably note the created events of a page, and the filter they go out under, before
        any leaves (see notifier.sync's doc). An incremental page needs it too: after a crash
        before its checkpoint, its token may be rejected, and the fresh snapshot that replaces
        the page no longer lists a relationship deleted since.

        Outbox sinks receive nothing before the checkpoint, so only direct sinks need it.
        """
        if not spec.direct or not self.ANNOUNCES:
            return
        items = [
            Announcement(e.subject, e.time, e.relationship_json(), fingerprint)
            for e in events if e.kind is CREATED
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

        After a filter change, a known or announced id the new snapshot did not list has
        either left the filter (forgotten without an event) or been deleted (reported): see
        ``_within``. A known id a query listed before, or one announced under the new filter
        (by an attempt of this resync that never checkpointed), is reported; a query's
        matching of any other cannot be told here, so it is forgotten.
        """
        sub, cid = spec.subscription, spec.container_id
        # Forgotten (left the filter) only by the final commit, with the new filter: a resync
        # that dies before it, followed by another filter change, still knows them (a query
        # resync forgetting them batch by batch, then a change back to a domains filter, lost
        # the deletion of one deleted meanwhile: the consumer kept it).
        forgotten: list[str] = []
        # Walked with keyset pagination: each batch is a fresh query starting after the last
        # id of the one before, so settling a batch between two is safe and the scan never
        # starts over (starting over made large resyncs quadratic).
        async for batch in self._store.iter_resync_missing(sub, cid, RESYNC_DELETE_BATCH):
            now = self._clock()
            changed = True
            deletions = batch
            if pos.reason == "filter":
                deletions = []
                for k in batch:
                    if _within(spec, fingerprint, k.filter_fingerprint, k.body):
                        deletions.append(k)
                    else:
                        forgotten.append(k.rel_id)
            if not deletions:
                continue
            events = (
                missing_deletions(subscription=sub, container_id=cid, missing=deletions,
                                  seen_at=rfc3339(now), project_name=spec.project_name)
                if emit else []
            )
            await self._settle(spec, token, events, result,
                               remove_ids=[k.rel_id for k in deletions], created=0,
                               deleted=len(deletions), now=now)
        if forgotten:
            log.info("filter change: %d relationship(s) no longer match the filter and are "
                     "forgotten (no deleted events)", len(forgotten),
                     extra={"subscription": sub, "container": cid})
        async for announced in self._store.iter_announced_missing(sub, cid, ANNOUNCED_BATCH):
            now = self._clock()
            changed = True
            gone = announced
            if pos.reason == "filter":
                # Announced under another filter, one that left the new one is forgotten like a
                # known one (a created-deleted pair would report a live one deleted; the final
                # commit drops every announcement); announced under this one, it is gone:
                # reported.
                gone = [a for a in announced
                        if _within(spec, fingerprint, a.filter_fingerprint, a.raw)]
            if not gone:
                continue
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
            await self._settle(spec, token, events, result, remove_ids=[a.rel_id for a in gone],
                               created=len(rels), deleted=len(rels), now=now)
        now = self._clock()
        await self._store.commit_page(
            sub, cid, next_token=token, resync_cursor=None, in_resync=False, add_ids=(),
            remove_ids=forgotten, filter_fingerprint=fingerprint, changed=changed, now=now)
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
