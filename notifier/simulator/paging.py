"""Walking a container for pages: snapshots, change windows, searches, and "changed since?".

Everything here is a pure function of a container and its arguments; nothing renders JSON.
Pages stop at ``limit`` items and return the cursor of the first item left out, so a page's
"is there more?" answer is exact (no trailing empty page).
"""

from __future__ import annotations

from collections.abc import Iterator

from notifier.simulator.model import Container, Rel
from notifier.simulator.query import Query
from notifier.simulator.tokens import Cursor, TokenError

_MEMO_LIMIT = 8192


def iter_creations(c: Container, q: Query, cursor: Cursor, upto: int
                   ) -> Iterator[tuple[Cursor, Rel]]:
    """Relationships created at seq <= ``upto`` matching ``q``'s criteria, resuming at cursor.

    Anchored queries (a fully qualified entity) walk the entity index; the others walk the log.
    Each item comes with the cursor that resumes at it.
    """
    if q.anchors is not None:
        if cursor is not None and not isinstance(cursor, tuple):
            raise TokenError("cursor does not fit the query")
        i0, j0 = cursor if cursor is not None else (0, 0)
        index = q.anchor_index
        for i in range(i0, len(q.anchors)):
            anchor = q.anchors[i]
            lst = c.by_entity.get(anchor)
            if not lst:
                continue
            for j in range(j0 if i == i0 else 0, len(lst)):
                rel = lst[j]
                if rel.cseq > upto:
                    break
                other = rel.b if rel.a == anchor else rel.a
                seen_at = index.get(other)
                if seen_at is not None and seen_at < i:
                    continue  # already listed under an earlier anchor
                if q.matches(rel):
                    yield (i, j), rel
        return
    if cursor is not None and not isinstance(cursor, int):
        raise TokenError("cursor does not fit the query")
    log = c.log
    matches = None if q.kind == "all" else q.matches
    for pos in range(cursor or 0, min(upto, len(log))):
        rel = log[pos]
        if rel.cseq == pos + 1 and (matches is None or matches(rel)):
            yield pos, rel


def snapshot_page(c: Container, q: Query, at: int, cursor: Cursor, limit: int,
                  tombstones: list[Rel] | None = None) -> tuple[list[Rel], Cursor]:
    """Relationships alive at seq ``at`` (live only: an onlyDeleted query selects none).

    With ``tombstones`` (a list to fill), the relationships of the page's creation range that
    were deleted at or before ``at`` are collected there too; they count towards ``limit``.
    """
    out: list[Rel] = []
    if q.only_deleted:
        return out, None
    extra = 0
    for cur, rel in iter_creations(c, q, cursor, at):
        gone = bool(rel.dseq and rel.dseq <= at)
        if gone and tombstones is None:
            continue
        if len(out) + extra == limit:
            return out, cur
        if gone:
            assert tombstones is not None
            tombstones.append(rel)
            extra += 1
        else:
            out.append(rel)
    return out, None


def search_page(c: Container, q: Query, cursor: Cursor, limit: int) -> tuple[list[Rel], Cursor]:
    """Relationships in their current state, filtered by include/onlyDeleted."""
    out: list[Rel] = []
    for cur, rel in iter_creations(c, q, cursor, c.seq):
        if not q.visible_now(rel):
            continue
        if len(out) == limit:
            return out, cur
        out.append(rel)
    return out, None


def change_page(c: Container, q: Query, after: int, cursor: int | None, end: int, limit: int
                ) -> tuple[list[Rel], list[Rel], int | None]:
    """Changes in the window (after, end]: created-and-alive-at-end, and deleted.

    A relationship created and deleted inside one window appears only in ``deleted``.
    """
    current: list[Rel] = []
    deleted: list[Rel] = []
    pos = after if cursor is None else cursor
    log = c.log
    everything = q.kind == "all"
    while pos < end:
        rel = log[pos]
        if rel.cseq == pos + 1:
            hit = (not q.only_deleted and (rel.dseq == 0 or rel.dseq > end)
                   and (everything or q.matches(rel)))
            target = current
        else:
            hit = everything or q.matches(rel)
            target = deleted
        if hit:
            if len(current) + len(deleted) == limit:
                return current, deleted, pos
            target.append(rel)
        pos += 1
    return current, deleted, None


def _change_matches(c: Container, q: Query, pos: int) -> bool:
    rel = c.log[pos]
    if q.only_deleted and rel.cseq == pos + 1:
        return False
    return q.matches(rel)


def _last_match(c: Container, q: Query, lo: int, hi: int) -> int:
    """Highest seq in (lo, hi] whose change matches ``q``, or 0."""
    for pos in range(hi - 1, lo - 1, -1):
        if _change_matches(c, q, pos):
            return pos + 1
    return 0


def changed_since(c: Container, q: Query, watermark: int) -> bool:
    """Whether any change after ``watermark`` matches ``q`` (cheap for repeated polling).

    Unfiltered and domain-filtered tokens are answered from the per-domain last-change index.
    Finer queries scan the log once and remember, per query, the highest matching seq over
    the range already scanned.
    """
    seq = c.seq
    if watermark >= seq:
        return False
    if q.kind == "all" and not q.only_deleted:
        return True
    if q.index_domains is not None:
        latest = max((c.last_by_domain.get(d, 0) for d in q.index_domains), default=0)
        if latest <= watermark:
            return False
        if q.kind == "domains":
            return True
    memo = c.status_memo.get(q.key)
    if memo is None:
        if len(c.status_memo) >= _MEMO_LIMIT:
            c.status_memo.clear()
        memo = [watermark, seq, _last_match(c, q, watermark, seq)]
        c.status_memo[q.key] = memo
    lo, hi, last = memo
    if hi < seq:
        newer = _last_match(c, q, hi, seq)
        memo[1], memo[2] = seq, max(last, newer)
    if watermark < lo:
        if memo[2] == 0:
            memo[2] = _last_match(c, q, watermark, lo)
        memo[0] = watermark
    return memo[2] > watermark
