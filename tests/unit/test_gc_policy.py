"""RunGC: the collector paused during start-up, frozen and tuned after, restored at the end."""

from __future__ import annotations

import gc

from notifier.gc_policy import GC_YOUNG_THRESHOLD, RunGC


def test_a_run_pauses_then_tunes_then_restores_the_collector() -> None:
    before = gc.get_threshold()
    assert gc.isenabled()
    run = RunGC()
    run.pause()
    assert not gc.isenabled()
    run.started()
    run.started()  # once only
    try:
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        run.restore()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_failed_start_up_restores_the_collector() -> None:
    run = RunGC()
    run.pause()
    run.restore()  # start-up never finished
    assert gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled() -> None:
    gc.disable()
    try:
        run = RunGC()
        run.pause()
        run.started()
        assert not gc.isenabled()
        run.restore()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
