"""Start and end of a run's chores: dropping orphaned streams' state, emptying the outboxes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from notifier.durations import format_duration
from notifier.scheduler import CredentialScheduler
from notifier.sinks.base import OutboxSink
from notifier.state.base import StateStore

log = logging.getLogger("notifier.app")


async def prune_orphans(store: StateStore, schedulers: Sequence[CredentialScheduler],
                        retention: float) -> None:
    """Orphaned streams (subscription no longer configured) keep their state for
    ``retention`` seconds (``state.orphan_retention``), with a warning at every start; then
    it is dropped."""
    keep = {spec.key for s in schedulers for spec in (r.spec for r in s.streams)}
    res = await store.prune_streams(keep, now=time.time(), retention=retention)
    if res.kept:
        names = sorted({sub for sub, _ in res.kept})
        log.warning(
            "state kept for %d stream(s) of subscription(s) missing from the configuration:"
            " %s; dropped after %s unless configured again (rename: notifier state rename"
            " OLD NEW; drop now: notifier state forget NAME)",
            len(res.kept), ", ".join(names), format_duration(retention))
    if res.dropped:
        log.info("forgot %d orphaned stream(s) past the orphan retention: %s",
                 len(res.dropped), ", ".join(sorted({sub for sub, _ in res.dropped})))


async def drain_outboxes(store: StateStore, outbox_sinks: Sequence[OutboxSink],
                         wait: float = 30.0) -> None:
    """With --once, give the webhook dispatchers a bounded time to empty their outbox."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pending = 0
        for s in outbox_sinks:
            stats = await store.outbox_stats(s.name)
            pending += stats.pending_count
        if pending == 0:
            return
        await asyncio.sleep(0.2)
    log.warning("webhook outbox not empty after %.0fs; delivery continues at the next run",
                wait)
