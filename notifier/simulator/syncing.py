"""The read protocol: sync, syncStatus, and search/intersect pages (sections 3-6, 12).

Plain functions of the state and the parsed request; they return the JSON body or raise an
``ApiError``. Choices where the docs are silent:

* Bootstrap (no token) is a snapshot of the relationships alive at the current change-log
  sequence S, in creation order, paged; the last page's ``nextSyncToken`` has watermark S, so
  changes made while paging arrive with the next incremental sync. Snapshot items are shown as
  live (``isDeleted: false``) even if deleted after S; that deletion comes incrementally.
* Incremental sync with watermark W pages through the window (W, E], E fixed when the window
  is opened: ``current`` = created in the window and still alive at E; ``deleted`` = deleted in
  the window (even if created in it too). At most ``page_size`` items per page in total.
* ``filters`` sent together with a ``syncToken`` are ignored (counted in stats); the token
  keeps the query it was issued with.
* A token older than the container's retention horizon gets ``overwrite: true`` (syncStatus
  also says ``moreData: true``); ``sync`` then returns a full snapshot of what the token's query
  selects, ``overwrite: true`` on every page of it and ``deleted`` empty, ending with a fresh
  watermark token.
* A token from another container, another user (``bind_tokens_to_user``) or that cannot be
  decoded is a 400 BadInput from ``sync`` and an ``errors[]`` entry from ``syncStatus``.
* syncStatus accepts an array (documented) or a single object; ``moreData`` is true when sync
  would return something: a change matching the token's query after its watermark, or a
  paging cursor.
* Knobs for behaviour the docs leave open: ``snapshot_deletions`` makes snapshot pages also
  list, in ``deleted``, what their creation range lost at or before the watermark;
  ``reject_sync_tokens`` answers the next N syncs that carry a token with a 400 (a token the
  service no longer accepts); ``status_batch_400`` answers a syncStatus batch holding any
  unusable token with one 400 for the whole batch.
* search/intersect: ``pageLimit`` defaults to, and is clamped at, the page size (max 100);
  ``page.syncToken`` has the watermark of the first page and the query; a sync with it returns
  only matching changes (with ``onlyDeleted`` only deletions). Relationships created while
  paging may appear in both.
"""

from __future__ import annotations

from typing import Any

from notifier.simulator.bodies import ApiError, bad_field
from notifier.simulator.model import Container, Rel, render
from notifier.simulator.paging import change_page, changed_since, search_page, snapshot_page
from notifier.simulator.query import Query, domains_filter
from notifier.simulator.state import SimState
from notifier.simulator.tokens import SNAPSHOT, Cursor, SyncToken, TokenError


def check_token(state: SimState, c: Container, user: str, token: object) -> SyncToken:
    """A usable sync token for this container and caller, or a 400 ApiError."""
    try:
        tok = state.codec.decode(token)
    except TokenError as exc:
        raise bad_field("syncToken", f"The sync token is not valid: {exc}.") from None
    if tok.container != c.id:
        raise bad_field("syncToken", "The sync token belongs to another container.")
    if state.knobs.bind_tokens_to_user and tok.user != user:
        raise bad_field("syncToken", "The sync token was issued to another user.")
    if max(tok.watermark, tok.end or 0) > c.seq:
        raise bad_field("syncToken", "The sync token does not match this container's data.")
    return tok


def sync(state: SimState, c: Container, user: str, body: Any,
         page_size: int | None = None) -> dict[str, Any]:
    """``POST relationships:sync``; ``page_size`` overrides the knob (huge pages)."""
    size = page_size or state.knobs.page_size
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise bad_field("body", "Expected a JSON object.")
    raw_token = body.get("syncToken")
    if raw_token is None:
        return _snapshot(state, c, user, domains_filter(body.get("filters")), c.seq, None, False,
                         size)
    if state.knobs.reject_sync_tokens > 0:
        state.knobs.reject_sync_tokens -= 1
        raise bad_field("syncToken", "The sync token is not valid: it is no longer accepted.")
    tok = check_token(state, c, user, raw_token)
    if body.get("filters") is not None:
        state.stats.sync_filters_ignored += 1
    if tok.watermark < c.horizon:
        return _snapshot(state, c, tok.user, tok.query, c.seq, None, True, size)
    if tok.mode == SNAPSHOT:
        return _snapshot(state, c, tok.user, tok.query, tok.watermark, tok.cursor,
                         tok.overwrite, size)
    return _changes(state, c, tok, size)


def _snapshot(state: SimState, c: Container, user: str, q: Query, at: int, cursor: Cursor,
              overwrite: bool, size: int) -> dict[str, Any]:
    gone: list[Rel] | None = [] if state.knobs.snapshot_deletions else None
    try:
        rels, nxt = snapshot_page(c, q, at, cursor, size, gone)
    except TokenError as exc:
        raise bad_field("syncToken", f"The sync token is not valid: {exc}.") from None
    if nxt is None:
        following = SyncToken(c.id, user, q, at)
        state.stats.snapshots_finished.append((c.id, q.key, at))
    else:
        following = SyncToken(c.id, user, q, at, SNAPSHOT, nxt, None, overwrite)
    return {"current": {"data": [render(r, "alive") for r in rels]},
            "deleted": {"data": [render(r, "deleted") for r in gone or ()]},
            "moreData": nxt is not None,
            "overwrite": overwrite,
            "nextSyncToken": state.codec.encode(following)}


def _changes(state: SimState, c: Container, tok: SyncToken, size: int) -> dict[str, Any]:
    w, cursor = tok.watermark, tok.cursor
    end = tok.end if cursor is not None and tok.end is not None else c.seq
    if cursor is not None and not (isinstance(cursor, int) and w <= cursor <= end):
        raise bad_field("syncToken", "The sync token is not valid: bad cursor.")
    current, deleted, nxt = change_page(c, tok.query, w, cursor, end, size)
    if nxt is None:
        following = SyncToken(c.id, tok.user, tok.query, end)
    else:
        following = SyncToken(c.id, tok.user, tok.query, w, cursor=nxt, end=end)
    return {"current": {"data": [render(r, "alive") for r in current]},
            "deleted": {"data": [render(r, "deleted") for r in deleted]},
            "moreData": nxt is not None,
            "overwrite": False,
            "nextSyncToken": state.codec.encode(following)}


def sync_status(state: SimState, c: Container, user: str, body: Any) -> dict[str, Any]:
    """``POST relationships:syncStatus``: one result per usable token, the rest in errors."""
    if isinstance(body, dict):
        body = [body]  # open question 1: also accept a single object
    if not isinstance(body, list):
        raise bad_field("body", "Expected a JSON array of {syncToken, referenceId}.")
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in body:
        if not isinstance(item, dict):
            errors.append({**bad_field("body", "Expected an object.").body,
                           "syncToken": None, "referenceId": None})
            continue
        raw, ref = item.get("syncToken"), item.get("referenceId")
        try:
            tok = check_token(state, c, user, raw)
        except ApiError as err:
            errors.append({**err.body, "syncToken": raw, "referenceId": ref})
            continue
        if tok.watermark < c.horizon:
            more, overwrite = True, True
        elif tok.cursor is not None:
            more, overwrite = True, tok.overwrite
        else:
            more, overwrite = changed_since(c, tok.query, tok.watermark), False
        results.append({"syncToken": raw, "referenceId": ref, "moreData": more,
                        "overwrite": overwrite})
    state.stats.sync_status_tokens += len(body)
    if errors and state.knobs.status_batch_400:
        first = errors[0]
        raise bad_field("syncToken", f"{first.get('detail') or 'A sync token is not valid.'}")
    return {"results": results, "errors": errors}


def page_limit(state: SimState, value: str | None) -> int:
    cap = state.knobs.page_size
    if value is None:
        return cap
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise bad_field("pageLimit", f"The value '{value}' is not valid.")
    return min(n, cap)


def query_page(state: SimState, c: Container, user: str, q: Query, limit: int,
               continuation: str | None) -> dict[str, Any]:
    """One page of search or intersect results, with ``page.syncToken`` scoped to ``q``."""
    codec = state.codec
    cursor, at = None, c.seq
    try:
        if continuation:
            cursor, at = codec.decode_continuation(continuation, q)
            if at > c.seq:
                raise TokenError("unknown position")
        rels, nxt = search_page(c, q, cursor, limit)
    except TokenError as exc:
        raise bad_field("continuationToken", f"The value is not valid: {exc}.") from None
    return {"page": {"continuationToken": (None if nxt is None else
                                           codec.encode_continuation(nxt, at, q)),
                     "syncToken": codec.encode(SyncToken(c.id, user, q, at))},
            "relationships": [render(r) for r in rels]}
