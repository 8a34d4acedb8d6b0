"""diff_page against the straightforward loop it replaced (kept here as the reference): the
page without deletions takes a shorter path, and every page must give the same diff."""

from __future__ import annotations

from collections.abc import Set

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.core.diff import PageDiff, diff_page
from notifier.core.events import CREATED, DELETED, ChangeKind, build_event
from notifier.source.models import Relationship


def _rel(rid: str, deleted: bool) -> Relationship:
    raw = {"id": rid, "createdOn": "2024-01-01T00:00:00Z", "isDeleted": deleted,
           "entities": [{"domain": "d", "type": "t", "id": "a"},
                        {"domain": "d", "type": "t", "id": "b"}]}
    return Relationship(rid, raw["createdOn"], deleted, None, raw)


def reference_diff(  # noqa: C901 - the loop as it was
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
                )
            )

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


_IDS = st.sampled_from(["r1", "r2", "r3", "r4", "r5"])


@settings(max_examples=400, deadline=None)
@given(current=st.lists(_IDS, max_size=6), deleted=st.lists(_IDS, max_size=3),
       known=st.sets(_IDS), resync=st.booleans(), emit=st.booleans())
def test_diff_page_equals_the_reference_loop(current, deleted, known, resync, emit):
    args = {"subscription": "s", "container_id": "c", "known": known, "resync": resync,
            "emit": emit, "seen_at": "2024-01-02T00:00:00Z",
            "current": [_rel(r, False) for r in current],
            "deleted": [_rel(r, True) for r in deleted]}
    got, want = diff_page(**args), reference_diff(**args)
    assert (got.add_ids, got.remove_ids, got.seen_ids, got.created, got.deleted) == (
        want.add_ids, want.remove_ids, want.seen_ids, want.created, want.deleted)
    assert [(e.id, e.kind, e.subject) for e in got.events] == [
        (e.id, e.kind, e.subject) for e in want.events]
