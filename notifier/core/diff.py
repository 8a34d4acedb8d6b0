"""Turn one sync page into events and known-set changes (pure).

Three situations share this function:

* incremental pages: ``current`` holds relationships created since the token, ``deleted`` those
  deleted since;
* resync pages (the bootstrap without a token, or an ``overwrite`` resync): ``current`` is part of
  the full set, so only relationships the store does not know yet are new; deletions of known ids
  that are missing from the full set are found at the end of the resync by the store
  (``iter_resync_missing``), not here; so are the relationships whose created events may have
  gone out before a crash and that a restarted resync no longer lists (``vanished_announced``);
* a relationship that appears in both lists of one page was created and deleted within the window:
  it gets a created event followed by a deleted one, and leaves the known set as it was.

``known`` is the subset of the page's ids that the store already knows for the stream; it is all
this function needs from the store, so the known set itself never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Any

import orjson

from notifier.core.events import (
    CREATED,
    DELETED,
    ChangeKind,
    Event,
    build_event,
    created_events,
    data_head,
)
from notifier.source.models import Relationship
from notifier.state.base import KnownRelationship

_DELETION_FIELDS = frozenset({"isDeleted", "deletedOn"})
# ``"isDeleted":<bool>`` with the comma that joins it to the next member, or else the previous
# one (last member): what replaces it
_DELETED_MEMBERS = ((b'"isDeleted":false,', b""), (b'"isDeleted":true,', b""),
                    (b',"isDeleted":false}', b"}"), (b',"isDeleted":true}', b"}"))


@dataclass(slots=True)
class PageDiff:
    events: list[Event] = field(default_factory=list)
    add_ids: list[str] = field(default_factory=list)
    remove_ids: list[str] = field(default_factory=list)
    seen_ids: list[str] = field(default_factory=list)
    created: int = 0
    deleted: int = 0


def page_ids(current: Iterable[Relationship], deleted: Iterable[Relationship]) -> list[str]:
    """Every relationship id a page mentions, for the store's ``known_subset`` lookup."""
    ids = [r.id for r in current]
    ids.extend(r.id for r in deleted)
    return ids


def diff_page(
    *,
    subscription: str,
    container_id: str,
    project_name: str | None = None,
    current: list[Relationship],
    deleted: list[Relationship],
    known: Set[str],
    resync: bool,
    emit: bool,
    seen_at: str,
) -> PageDiff:
    """Events and known-set changes for one page.

    ``resync`` marks a bootstrap or overwrite page (events carry ``snapshot: true``); ``emit``
    false records the ids without events (``emit_initial: false`` on the first sync).
    """
    out = PageDiff()
    deleted_ids = {r.id for r in deleted}
    in_page: set[str] = set()
    head = data_head(subscription, container_id, project_name) if emit else None

    def add(rel: Relationship, kind: ChangeKind) -> None:
        if kind is CREATED:
            out.created += 1
        else:
            out.deleted += 1
        if emit:
            out.events.append(
                build_event(
                    subscription=subscription,
                    container_id=container_id,
                    project_name=project_name,
                    relationship=rel,
                    kind=kind,
                    snapshot=resync,
                    seen_at=seen_at,
                    head=head,
                )
            )

    if not deleted_ids:
        # The common page (a resync's above all): no deletions. If no id repeats either, the
        # listed ids are the page's and the new ones are those the store does not know.
        ids = [r.id for r in current]
        in_page.update(ids)
        if len(in_page) == len(ids):
            if resync:
                out.seen_ids = ids
            new = [r for r in current if r.id not in known]
            out.add_ids = [r.id for r in new]
            out.created = len(new)
            if emit:
                out.events = created_events(
                    subscription=subscription, container_id=container_id, relationships=new,
                    snapshot=resync, project_name=project_name, head=head)
            return out
        in_page.clear()

    current_by_id: dict[str, Relationship] = {}
    for rel in current:
        if rel.id in in_page:
            continue  # the same relationship twice in one list: one change
        in_page.add(rel.id)
        current_by_id[rel.id] = rel
        if resync and rel.id not in deleted_ids:
            # Listed as deleted too (pages joined in one batch, or a snapshot page with
            # deletions): it is gone, so it does not count as listed; an announcement of it
            # is then settled at the end of the resync (created, then deleted).
            out.seen_ids.append(rel.id)
        if rel.id in deleted_ids:
            continue  # created and deleted in this window: handled with the deletions
        if rel.id not in known:
            add(rel, CREATED)
            out.add_ids.append(rel.id)

    done: set[str] = set()
    for rel in deleted:
        if rel.id in done:
            continue
        done.add(rel.id)
        if rel.id in known:
            add(rel, DELETED)
            out.remove_ids.append(rel.id)
        elif not resync:
            # Unknown to us and already deleted: it was created and deleted between two polls.
            # Both changes happened; report both, in order, and keep the known set unchanged.
            add(current_by_id.get(rel.id, rel), CREATED)
            add(rel, DELETED)
        elif rel.id in current_by_id and rel.id not in known:
            # A resync page listing it in both lists: it no longer exists; nothing to report.
            pass
    return out


def stored_body(rel: Relationship) -> bytes:
    """What the store keeps of a relationship for a later deleted event: the body the API
    sent, without the deletion fields (they are set when the deletion is found).

    Cut out of the relationship's compact JSON text when it has no ``deletedOn`` and one
    ``isDeleted`` member (a parsed relationship always has that one at its top level: the
    pattern cannot match inside a string, where a quote is escaped), so a sync page's
    relationships are not decoded for it; otherwise built from ``raw``."""
    body = rel.json
    if b'"deletedOn"' not in body and body.count(b'"isDeleted":') == 1:
        for member, rest in _DELETED_MEMBERS:
            cut = body.replace(member, rest, 1)
            if len(cut) < len(body):
                return cut
    return orjson.dumps({k: v for k, v in rel.raw.items() if k not in _DELETION_FIELDS})


def deleted_body(rel_id: str, body: bytes | None) -> Relationship:
    """The relationship a deleted event carries when the API no longer sends it: the last
    body seen with ``isDeleted: true`` (only the id for ids known before bodies were kept)."""
    raw: dict[str, Any] = orjson.loads(body) if body is not None else {"id": rel_id}
    raw["isDeleted"] = True
    return Relationship(id=rel_id, created_on=str(raw.get("createdOn", "")), is_deleted=True,
                        deleted_on=None, raw=raw)


def with_stored_body(rel: Relationship, body: bytes) -> Relationship:
    """A deleted relationship as the API sent it, completed from the stored body where it
    lacks the entities (the API's fields win)."""
    raw: dict[str, Any] = {**orjson.loads(body), **rel.raw}
    if not raw.get("entities"):
        raw["entities"] = orjson.loads(body).get("entities")
    return Relationship(id=rel.id, created_on=rel.created_on or str(raw.get("createdOn", "")),
                        is_deleted=rel.is_deleted, deleted_on=rel.deleted_on, raw=raw)


def missing_deletions(
    *,
    subscription: str,
    container_id: str,
    project_name: str | None = None,
    missing: Iterable[KnownRelationship],
    seen_at: str,
) -> list[Event]:
    """Deleted events for known relationships absent from a completed resync.

    The API does not send these relationships any more: the event carries the last body seen
    (both entities) with ``isDeleted: true``, and the time the deletion was noticed.
    """
    events = []
    head = data_head(subscription, container_id, project_name)
    for known in missing:
        rel = deleted_body(known.rel_id, known.body)
        events.append(
            build_event(
                subscription=subscription,
                container_id=container_id,
                project_name=project_name,
                relationship=rel,
                kind=DELETED,
                snapshot=True,
                seen_at=seen_at,
                head=head,
            )
        )
    return events


def vanished_announced(
    *,
    subscription: str,
    container_id: str,
    project_name: str | None = None,
    relationships: Iterable[Relationship],
    seen_at: str,
) -> list[Event]:
    """Created then deleted events for relationships a resync page announced before a crash
    and the restarted resync no longer lists.

    The created event may have reached consumers (with this same id) or not; either way the
    deleted event that follows it closes the relationship, and created comes first.
    """
    events = []
    head = data_head(subscription, container_id, project_name)
    for rel in relationships:
        gone = Relationship(
            id=rel.id, created_on=rel.created_on, is_deleted=True, deleted_on=None,
            raw={**rel.raw, "isDeleted": True},
        )
        for kind, body in ((CREATED, rel), (DELETED, gone)):
            events.append(
                build_event(
                    subscription=subscription,
                    container_id=container_id,
                    project_name=project_name,
                    relationship=body,
                    kind=kind,
                    snapshot=True,
                    seen_at=seen_at,
                    head=head,
                )
            )
    return events
