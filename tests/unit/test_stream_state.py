"""The per-stream state machine's start and transitions (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from notifier.core.stream_state import (
    Position,
    Transition,
    filter_fingerprint,
    matches_domains,
    start,
)
from notifier.state.base import StreamState

FP = filter_fingerprint(None, None)
BASE = StreamState(subscription="s", container_id="c", sync_token="t", resync_cursor=None,
                   in_resync=False, last_checked_at=None, last_changed_at=None,
                   token_updated_at=None, known_count=3, quarantined_until=None,
                   quarantine_reason=None, failures=0, filter_fingerprint=FP)
RESYNC = replace(BASE, in_resync=True, resync_cursor="k", resync_reason="snapshot")


@pytest.mark.parametrize(("state", "force", "want"), [
    (None, False, ("resync", None, "snapshot", Transition.BOOTSTRAP, True, True)),
    (replace(BASE, sync_token=None), False,
     ("resync", None, "snapshot", Transition.BOOTSTRAP, True, True)),
    (BASE, False, ("incremental", "t", None, Transition.CONTINUE, False, False)),
    (replace(BASE, filter_fingerprint=None), False,  # before fingerprints: adopted
     ("incremental", "t", None, Transition.CONTINUE, False, False)),
    (BASE, True, ("resync", None, "snapshot", Transition.FORCED, True, True)),
    (RESYNC, False, ("resync", "k", "snapshot", Transition.RESUME, False, False)),
    (replace(RESYNC, resync_cursor=None), False,
     ("resync", None, "snapshot", Transition.RESUME, True, True)),
    # A forced resync drops even a saved cursor (a cursor rejected for good, defect 3).
    (RESYNC, True, ("resync", None, "snapshot", Transition.FORCED, True, True)),
    (replace(BASE, filter_fingerprint="other"), False,
     ("resync", None, "filter", Transition.FILTER_CHANGED, True, True)),
    (replace(RESYNC, resync_reason="filter"), True,
     ("resync", None, "filter", Transition.FORCED, True, True)),
])
def test_where_a_drain_starts(state: StreamState | None, force: bool,
                              want: tuple[object, ...]) -> None:
    pos = start(state, fingerprint=FP, force_resync=force)
    assert (pos.phase, pos.token, pos.reason, pos.transition, pos.announce,
            pos.begins_snapshot) == want


def test_transitions() -> None:
    inc = Position("incremental", "t")
    ow = inc.overwrite()
    assert (ow.phase, ow.token, ow.reason, ow.announce, ow.begins_snapshot) == (
        "resync", None, "snapshot", True, True)
    cp = ow.checkpoint("k1")
    assert (cp.token, cp.announce, cp.begins_snapshot, cp.transition) == (
        "k1", False, False, Transition.CHECKPOINT)
    re = cp.restarted()
    assert (re.token, re.announce, re.begins_snapshot, re.transition) == (
        None, True, True, Transition.RESTARTED)
    assert inc.rejected().reason == "snapshot"
    flt = replace(cp, reason="filter")
    assert flt.rejected().reason == "filter"
    assert flt.restarted().reason == "filter"
    done = cp.finished("t2")
    assert (done.phase, done.token, done.reason) == ("incremental", "t2", None)
    with pytest.raises(AssertionError):
        cp.overwrite()
    with pytest.raises(AssertionError):
        inc.restarted()


def test_filter_fingerprint_and_domain_matching() -> None:
    assert filter_fingerprint(["b", "a"], None) == filter_fingerprint(["a", "b", "a"], None)
    assert filter_fingerprint(["a"], None) != filter_fingerprint(None, None)
    assert filter_fingerprint(None, {"domain": "x"}) != filter_fingerprint(None, None)
    ents = [{"domain": "a"}, {"domain": "b"}]
    assert matches_domains(ents, None) is True
    assert matches_domains(ents, ["b", "z"]) is True
    assert matches_domains(ents, ["z"]) is False
    assert matches_domains(None, ["z"]) is None
