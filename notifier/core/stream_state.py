"""The per-stream state machine (pure): where the next sync request starts, and why it moves.

A stream is in one of two phases (persisted by the store, see ``notifier.state.base``):

* ``incremental``: ``token`` is the watermark of the last committed change;
* ``resync``: a snapshot is being listed and diffed against the known set; ``token`` is the
  cursor that continues it, or None when the snapshot (re)starts from its beginning (the
  "awaiting resync" case: bootstrap, a rejected token or cursor, a filter change, a restart).

Named transitions (``Transition``) move a ``Position`` from one state to the next; the drain in
``notifier.sync`` is a loop that asks the service for the page at ``position.token`` and applies
the transition the answer calls for. Every transition that (re)starts a snapshot comes with
``begins_snapshot``: the drain then empties the store's staging set (what the abandoned attempt
listed no longer counts as listed) before anything of the new snapshot is committed.

How a restart is told from a continuation: every page of a snapshot carries ``overwrite: true``,
so the flag says nothing. A snapshot lists each relationship once, in a stable order (creation
order): a page that lists an id the current snapshot already listed (committed) means the
service started the snapshot over (its retention horizon moved past it). See the README's
guarantees for the residual risk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from notifier.state.base import ResyncReason, StreamState

Phase = Literal["incremental", "resync"]


class Transition(StrEnum):
    BOOTSTRAP = "bootstrap"  # never synced: a first snapshot
    CONTINUE = "continue"  # incremental from the stored token
    RESUME = "resume"  # a resync in progress, from its saved cursor (or its beginning)
    FORCED = "forced"  # asked to resync (e.g. after a 400 on syncStatus): a fresh snapshot
    FILTER_CHANGED = "filter_changed"  # the configured filter differs from the stored one
    OVERWRITE = "overwrite"  # the service answered an incremental request with a snapshot
    RESTARTED = "restarted"  # a snapshot page lists an id this snapshot already listed
    REJECTED = "rejected"  # the service refused the token or cursor (400): a fresh snapshot
    CHECKPOINT = "checkpoint"  # a page committed: continue after it
    FINISHED = "finished"  # the snapshot's last page: incremental from its token


@dataclass(frozen=True, slots=True)
class Position:
    """Where the next sync request of a stream starts, and what the pages it gets mean."""

    phase: Phase
    token: str | None  # incremental: the watermark token; resync: the cursor (None: start)
    reason: ResyncReason | None = None  # resync only: 'snapshot' or 'filter'
    announce: bool = False  # informational: no page of this snapshot checkpointed yet
    first_sync: bool = False  # no token was ever committed (emit_initial applies)
    transition: Transition = Transition.CONTINUE  # how the stream got here
    begins_snapshot: bool = False  # the store must start the resync over before the page

    @property
    def resync(self) -> bool:
        return self.phase == "resync"

    def _snapshot(self, transition: Transition, reason: ResyncReason | None = None
                  ) -> Position:
        return replace(self, phase="resync", token=None, reason=reason or self.reason
                       or "snapshot", announce=True, transition=transition,
                       begins_snapshot=True)

    def overwrite(self) -> Position:
        """An incremental request was answered with the first page of a snapshot."""
        assert self.phase == "incremental"
        return self._snapshot(Transition.OVERWRITE, "snapshot")

    def restarted(self) -> Position:
        """The page in hand starts the snapshot over: it is that snapshot's first page."""
        assert self.phase == "resync"
        return self._snapshot(Transition.RESTARTED)

    def rejected(self) -> Position:
        """A 400 for the token or cursor: start a fresh snapshot (diffed exactly)."""
        return self._snapshot(Transition.REJECTED, self.reason if self.resync else "snapshot")

    def checkpoint(self, next_token: str) -> Position:
        """A page (or batch) is committed; the next request continues after it."""
        return replace(self, token=next_token, announce=False,
                       transition=Transition.CHECKPOINT, begins_snapshot=False)

    def finished(self, token: str) -> Position:
        return Position("incremental", token, transition=Transition.FINISHED)


def start(state: StreamState | None, *, fingerprint: str, force_resync: bool) -> Position:
    """Where a drain starts, from the stored state and the configured filter."""
    if state is None or (state.sync_token is None and not state.in_resync):
        return Position("resync", None, "snapshot", announce=True, first_sync=True,
                        transition=Transition.BOOTSTRAP, begins_snapshot=True)
    first = state.sync_token is None
    stored = state.filter_fingerprint
    if stored is not None and stored != fingerprint:
        return Position("resync", None, "filter", announce=True, first_sync=first,
                        transition=Transition.FILTER_CHANGED, begins_snapshot=True)
    if force_resync:
        reason = state.resync_reason if state.in_resync else "snapshot"
        return Position("resync", None, reason or "snapshot", announce=True, first_sync=first,
                        transition=Transition.FORCED, begins_snapshot=True)
    if state.in_resync:
        cursor = state.resync_cursor
        # Without a cursor the snapshot starts over: what the cut attempt listed no longer
        # counts as listed (its first page was never checkpointed, or a search bootstrap).
        return Position("resync", cursor, state.resync_reason or "snapshot",
                        announce=cursor is None, first_sync=first, transition=Transition.RESUME,
                        begins_snapshot=cursor is None)
    return Position("incremental", state.sync_token, transition=Transition.CONTINUE)


def filter_fingerprint(domains: Sequence[str] | None, query: Mapping[str, str] | None) -> str:
    """A short stable digest of a subscription's filter (order of domains does not matter)."""
    text = repr((sorted(set(domains)) if domains else None,
                 sorted(query.items()) if query else None))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def matches_domains(entities: object, domains: Sequence[str] | None) -> bool | None:
    """Whether a relationship (its ``entities`` as stored) falls within a domains filter: one
    of its entities is in one of the domains. None when that cannot be told."""
    if domains is None:
        return True
    if not isinstance(entities, list) or not entities:
        return None
    names = {e.get("domain") for e in entities if isinstance(e, dict)}
    return bool(names & set(domains))
