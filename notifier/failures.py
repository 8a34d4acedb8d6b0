"""What a failure means for a stream, read from its error's class (notifier.errors).

A stream is quarantined (with a growing backoff, remembered in the store) when its error names
a quarantine reason, and resynced when it says the token is no good; any other failure is only
retried at the stream's next check and logged (sink outages once a minute per sink). A state
store failure is not the stream's: the store's StoreGuard has paused every loop, and the page,
not checkpointed, is fetched again at the stream's next check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from notifier.core.planner import SchedulerSettings
from notifier.core.schedule import quarantine_delay
from notifier.errors import NotifierError, SinkError, StateError
from notifier.metrics import Metrics
from notifier.runtime import LogThrottle, PassStats, StreamRuntime
from notifier.state.base import StateStore

log = logging.getLogger("notifier.scheduler")  # the scheduler's lines, as operators know them


class FailurePolicy:
    """Applies the failure policy for one credential's scheduler."""

    def __init__(self, credential: str, *, store: StateStore, metrics: Metrics,
                 settings: SchedulerSettings, clock: Callable[[], float] = time.time,
                 stats: PassStats) -> None:
        self._credential = credential
        self._store = store
        self._metrics = metrics
        self._s = settings
        self._clock = clock
        self.stats = stats
        self._sink_log = LogThrottle()

    async def on_failure(self, s: StreamRuntime, exc: NotifierError) -> None:
        """Quarantined, or retried at its next check and logged: as ``exc``'s class says."""
        if exc.pauses_work:  # the state store (logged and paused on by the StoreGuard)
            self.stats.failures += 1
            log.debug("sync paused by a state store failure: %s", exc, extra=self.ctx(s))
            return
        reason = exc.quarantine_reason
        if reason is not None:
            if exc.resync:
                s.force_resync = True
            await self.quarantine(s, reason, exc)
            return
        self.stats.failures += 1
        if isinstance(exc, SinkError):
            self._sink_failed(exc, s)
        elif exc.log_level >= logging.ERROR:
            log.error("sync failed: %s", exc, extra=self.ctx(s))
        else:
            log.log(exc.log_level, "sync failed, retried at the next check: %s", exc,
                    extra=self.ctx(s))

    def _sink_failed(self, exc: SinkError, s: StreamRuntime) -> None:
        """One log line per sink per minute during an outage, not one per stream per check."""
        suppressed = self._sink_log.allow(exc.sink)
        if suppressed is None:
            return
        more = f" ({suppressed} more pages failed since the last report)" if suppressed else ""
        log.warning("sink %s did not accept events; the page will be retried: %s%s",
                    exc.sink, exc, more, extra={**self.ctx(s), "sink": exc.sink})

    async def quarantine(self, s: StreamRuntime, reason: str, exc: Exception) -> None:
        """Quarantine ``s`` with a backoff that doubles per consecutive failure."""
        s.failures += 1
        delay = quarantine_delay(s.failures, self._s.quarantine_initial, self._s.quarantine_max)
        s.quarantined_until = self._clock() + delay
        self.stats.failures += 1
        try:
            await self._store.quarantine(*s.spec.key, until=s.quarantined_until, reason=reason)
        except StateError as err:  # held in memory; the stored backoff resumes after a restart
            log.warning("stream quarantine not stored: %s", err, extra=self.ctx(s))
        self._metrics.stream_quarantined(reason)
        log.warning("stream quarantined for %.0fs (%s): %s", delay, reason, exc,
                    extra=self.ctx(s))

    def ctx(self, s: StreamRuntime) -> dict[str, str]:
        """The log context of ``s``."""
        return {"subscription": s.spec.subscription, "container": s.spec.container_id,
                "credential": self._credential}
