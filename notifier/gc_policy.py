"""How ``notifier run`` uses Python's cyclic garbage collector.

Start-up builds what lives until exit (the config, every stream, clients, sinks): at 100,000
subscriptions each young-generation pass would walk those objects again and again, about a
third of start-up, so the collector is paused while they are built. Once started, they are
collected once and frozen out of every later pass (which would otherwise walk them while
events churn), and young objects are collected less often: events, records and pages are freed
by reference counting, their cycles are rare. Together about a fifth of the pipeline's CPU at
100k events. ``restore`` puts everything back as it was (tests run many Apps in one process).
"""

from __future__ import annotations

import gc

# Allocations between two young-generation GC passes (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


class RunGC:
    """The collector's settings over one run: ``pause`` at start, ``started``, ``restore``."""

    def __init__(self) -> None:
        self._thresholds = gc.get_threshold()
        self._enabled = gc.isenabled()
        self._started = False

    def pause(self) -> None:
        """Start-up begins: no cyclic collection until ``started``."""
        gc.disable()

    def started(self) -> None:
        """Start-up is done: collect (so no garbage cycle is frozen), freeze what exists,
        collect young objects less often, and collect again as before the run."""
        if self._started:
            return
        self._started = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        if self._enabled:
            gc.enable()

    def restore(self) -> None:
        """The run is over: thresholds, frozen objects and on/off as they were before it."""
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()
        if self._enabled:
            gc.enable()
        else:
            gc.disable()
