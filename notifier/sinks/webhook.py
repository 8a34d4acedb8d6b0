"""The webhook sink: a dispatcher that delivers the state store's outbox over signed HTTP calls.

An outbox sink (notifier.sinks.base): the pipeline writes a page's webhook events into the
outbox in the same transaction that commits the page's sync token (``OutboxItem(sink=name,
event_id=event.id, ordering_key=<relationship id>, payload=event.structured_json(),
event_time=event.time, created_at=now)``) and then calls ``notify()``. A slow, failing or gone
receiver therefore never blocks polling, and nothing is lost across restarts.

The dispatcher loop: fetch due rows (the store returns only the oldest pending row of each
relationship, so one relationship's events stay in order and a failing row holds back only its
own relationship), POST them within the endpoint's concurrency and rate limits, and record the
outcome:

- 2xx: delivered. The first 2xx after failures brings the rows waiting out a backoff forward
  (due now): a short outage does not delay events by the schedule's later steps.
- 410: the endpoint is gone. Delivery stops for this sink until restart, one ERROR is logged,
  events stay pending (fix the URL and restart).
- 429: the row waits for ``Retry-After`` without spending an attempt; the endpoint pauses too.
- anything else (other statuses, 3xx as redirects are not followed, timeouts, refused
  connections): the attempt is spent and the row waits ``retry_schedule[attempts - 1]`` (±10 %);
  once the schedule is spent the row is dead-lettered. A failed call's rows are rescheduled or
  dead-lettered in one transaction.

The outbox is capped (``max_pending``): at the cap ``admit`` refuses the next page's events,
so the pipeline leaves that page uncommitted and retries it later, as for any sink that is
down. Nothing is dropped; upstream keeps the changes behind the stream's sync token.

A state store failure (locked, disk full, I/O error) pauses the dispatcher with a growing
backoff (its poll interval doubling up to 30 s); the rows stay pending, and a delivery that
could not be recorded goes out again (receivers deduplicate on the event ``id``).

In cluster mode the store hands the dispatcher only rows of the work partitions this replica
owns, and records each outcome in the partition's Kafka transaction (notifier.cluster.outbox): a
new owner resumes the rows, their attempts and dead letters, and delivers again, under the same
``webhook-id``, a call whose outcome could not be recorded before its partition moved.

A circuit breaker per endpoint stops calls to an endpoint that keeps failing: while open no call
is made and no attempt is spent; after ``reset_after`` a single probe decides.

In batch mode up to ``batch_max`` rows go in one ``application/cloudevents-batch+json`` call and
share its outcome. A batch's ``webhook-id`` is ``batch-<uuid5 of its event ids in order>``: the
same batch re-sent carries the same id, but batches may be regrouped between attempts, so
receivers should deduplicate on each event's own ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from notifier.config import WebhookSinkConfig
from notifier.core.backoff import backoff_ceiling
from notifier.core.circuit import CircuitBreaker, CircuitState
from notifier.core.retry_schedule import next_delay, parse_retry_after
from notifier.errors import NotifierError, PartitionLostError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.signing import SigningKey
from notifier.sinks.webhook_http import Outcome, WebhookClient, check_url, signing_keys
from notifier.state.base import OutboxRow, StateStore

log = logging.getLogger(__name__)

BATCH_ID_NAMESPACE = uuid.UUID("3b0f7d52-8c1e-4d7a-9f64-2a5c0e9b1d37")
# Rows fetched per free delivery slot, beyond the rows already in flight.
_FETCH_PER_SLOT = 2
# A full outbox is counted again at most this often while pages wait for room.
_RECOUNT_SECONDS = 1.0
_STORE_PAUSE_MAX = 30.0  # the longest pause after state store failures in a row


def batch_id(event_ids: Sequence[str]) -> str:
    """The ``webhook-id`` of a batch: deterministic in its event ids and their order."""
    return "batch-" + str(uuid.uuid5(BATCH_ID_NAMESPACE, "\n".join(event_ids)))


class WebhookSink:
    """An outbox sink: ``async with`` runs the dispatcher; ``notify()`` wakes it."""

    def __init__(
        self,
        name: str,
        cfg: WebhookSinkConfig,
        store: StateStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        poll_interval: float = 1.0,
        stats_interval: float = 15.0,
        drain_timeout: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """``cfg`` is the sink's config model; ``clock`` gives epoch seconds (the store's time).

        ``poll_interval`` bounds how late a retry or a row replayed by another process is
        picked up; ``drain_timeout`` is how long in-flight calls may finish at shutdown.
        """
        self.name = name
        self._cfg = cfg
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._rand = rand
        self._poll_interval = poll_interval
        self._stats_interval = stats_interval
        self._drain_timeout = drain_timeout
        check_url(name, cfg.url, cfg.allow_insecure_http)
        self._keys: list[SigningKey] = signing_keys(name, cfg)
        self._batch = cfg.mode == "batch"
        self._batch_max = cfg.batch_max if self._batch else 1
        self._concurrency = cfg.max_concurrency
        self._schedule = list(cfg.retry_schedule)
        self._interval = 1.0 / cfg.rate_per_second if cfg.rate_per_second else 0.0
        cb = cfg.circuit_breaker
        self._breaker = CircuitBreaker(cb.failure_threshold, cb.reset_after)
        self._reported_circuit: CircuitState | None = None
        self._client = WebhookClient(name, cfg, self._keys, clock)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], list[int]] = {}
        self._gone = False
        self._paused_until = 0.0
        self._store_failures = 0  # state store failures since the last recorded outcome
        self._next_slot = 0.0
        self._soonest = float("inf")  # earliest next_attempt_at this process set
        self._reported_up: bool | None = None
        self._failing = False  # a call failed since the last success: retries are waiting
        self._max_pending = cfg.max_pending
        self._pending = 0  # pending rows: counted by the store, then kept up to date here
        self._pending_at = float("-inf")  # monotonic time of the last count
        metrics.outbox_limit(name, cfg.max_pending)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._client.open()
        self._task = asyncio.create_task(self._run(), name=f"webhook-dispatcher:{self.name}")
        self._report_health()
        log.info("webhook sink %s: dispatcher started (%s mode, concurrency %s)",
                 self.name, "batch" if self._batch else "single", self._concurrency)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
            if self._inflight:
                _done, pending = await asyncio.wait(
                    list(self._inflight), timeout=self._drain_timeout
                )
                for task in pending:  # their rows stay pending and go out after a restart
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
                    log.warning("webhook sink %s: %s calls abandoned at shutdown",
                                self.name, len(pending))
            await self._report_outbox()
        finally:
            await self._client.close()

    async def admit(self, count: int) -> None:
        """Called before a page's ``count`` events are written to this sink's outbox: raise
        ``SinkError`` while the outbox holds ``max_pending`` or more (the cap policy: the page
        is not committed and its stream retries later, so nothing is dropped and the backlog
        stays bounded, overshooting by at most the pages admitted just below the cap). A full
        outbox is counted again from the store at most once a second."""
        if self._pending >= self._max_pending and (
                time.monotonic() - self._pending_at > _RECOUNT_SECONDS):
            await self._recount()
        if self._pending >= self._max_pending:
            raise SinkError(
                f"outbox full: {self._pending} events pending, max_pending {self._max_pending}"
                " (the receiver is not keeping up); polling for this sink waits", sink=self.name)
        self._pending += count

    async def _recount(self) -> None:
        stats = await self._store.outbox_stats(self.name)
        self._pending = stats.pending_count
        self._pending_at = time.monotonic()

    def notify(self) -> None:
        """New rows are in the outbox: wake the dispatcher now (call from the event loop)."""
        self._wake.set()

    def healthy(self) -> bool:
        """False once the endpoint answered 410, or while its circuit is not closed."""
        return not self._gone and self._breaker.state is CircuitState.CLOSED

    # -- the dispatcher loop -----------------------------------------------------------------

    async def _run(self) -> None:
        next_stats = 0.0
        while not self._stopping:
            now = self._clock()
            if now >= next_stats:
                await self._report_outbox()
                next_stats = now + self._stats_interval
            try:
                wait = await self._dispatch(now)
            except NotifierError as exc:  # the store failed: keep going, try again later
                wait = self._store_failed("outbox read", exc)
            except Exception:  # a bug must not kill delivery for good: log and retry
                log.exception("webhook sink %s: dispatcher error", self.name)
                wait = self._poll_interval
            self._report_health()
            await self._sleep(min(wait, max(0.0, next_stats - self._clock())))

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if notify(), a finished call or a stop wakes us."""
        if seconds > 0 and not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), seconds)
            except TimeoutError:
                pass
        self._wake.clear()

    async def _dispatch(self, now: float) -> float:
        """Start as many calls as allowed; return how long to wait before looking again."""
        if self._gone:
            return self._stats_interval
        if now < self._paused_until:
            return self._paused_until - now
        retry_at = self._breaker.retry_at()
        if retry_at is not None and now < retry_at:
            return retry_at - now
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            return self._poll_interval  # a finishing call wakes us
        busy = {rid for ids in self._inflight.values() for rid in ids}
        limit = free * self._batch_max * _FETCH_PER_SLOT + len(busy)
        rows = [r for r in await self._store.outbox_fetch_due(self.name, now, limit)
                if r.row_id not in busy]
        idle = self._until_soonest(now)
        groups = [rows[i:i + self._batch_max] for i in range(0, len(rows), self._batch_max)]
        for group in groups[:free]:
            if not self._breaker.allow(now):
                return idle  # open or probing: a finishing call or the timeout wakes us
            task = asyncio.create_task(self._deliver(group))
            self._inflight[task] = [r.row_id for r in group]
            task.add_done_callback(self._call_done)
        return idle  # all slots busy (a finishing call wakes us) or nothing more is due

    def _until_soonest(self, now: float) -> float:
        """Wait until the earliest retry this process scheduled, at most ``poll_interval``."""
        if self._soonest <= now:
            self._soonest = float("inf")
            return self._poll_interval
        return min(self._poll_interval, self._soonest - now)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()

    async def _throttle(self) -> None:
        """Space calls ``1 / rate_per_second`` apart (no-op without a rate limit)."""
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    # -- one call and its outcome ------------------------------------------------------------

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        try:
            await self._throttle()
            if self._batch:
                body = b"[" + b",".join(r.payload for r in rows) + b"]"
                msg_id = batch_id([r.event_id for r in rows])
            else:
                body, msg_id = rows[0].payload, rows[0].event_id
            started = time.monotonic()
            outcome = await self._client.post(body, msg_id, batch=self._batch)
            seconds = time.monotonic() - started
            await self._settle(rows, outcome, seconds)
            self._store_failures = 0
        except PartitionLostError as exc:  # cluster mode: the rows' partition moved meanwhile
            log.info("webhook sink %s: outcome of a call not recorded (%s); the partition's new "
                     "owner delivers its rows again, with the same webhook-id", self.name, exc)
        except NotifierError as exc:  # the store failed: the rows stay pending and come back
            self._store_failed("recording a delivery", exc)
        except Exception:
            log.exception("webhook sink %s: delivery error", self.name)
            self._paused_until = max(self._paused_until, self._clock() + self._poll_interval)

    def _store_failed(self, what: str, exc: NotifierError) -> float:
        """Pause the dispatcher after a state store failure, longer for each in a row;
        returns the pause."""
        self._store_failures += 1
        wait = backoff_ceiling(self._store_failures - 1, base=self._poll_interval,
                               cap=max(self._poll_interval, _STORE_PAUSE_MAX))
        self._paused_until = max(self._paused_until, self._clock() + wait)
        log.error("webhook sink %s: %s failed: %s; the rows stay pending, retried in %.1fs",
                  self.name, what, exc, wait)
        return wait

    async def _settle(self, rows: list[OutboxRow], outcome: Outcome, seconds: float) -> None:
        now = self._clock()
        if outcome.kind == "ok":
            self._breaker.record_success()
            self._metrics.webhook_delivery(self.name, "ok", seconds)
            await self._store.outbox_mark_delivered([r.row_id for r in rows], now)
            self._pending = max(0, self._pending - len(rows))
            if self._failing:
                await self._recovered(now)
        elif outcome.kind == "gone":
            self._breaker.record_success()
            self._metrics.webhook_delivery(self.name, "gone", seconds)
            if not self._gone:
                self._gone = True
                log.error(
                    "webhook sink %s: endpoint answered 410 Gone; delivery stopped, events kept "
                    "pending. Fix the sink's url and restart the notifier to resume.", self.name,
                )
        elif outcome.kind == "rate_limited":
            self._breaker.record_success()
            self._metrics.webhook_delivery(self.name, "rate_limited", seconds)
            wait = parse_retry_after(outcome.retry_after, now)
            self._paused_until = max(self._paused_until, now + wait)
            self._soonest = min(self._soonest, now + wait)
            await self._store.outbox_settle_failed(  # no attempt spent
                [(r.row_id, now + wait, r.attempts, outcome.detail) for r in rows], [], now)
        else:
            self._breaker.record_failure(now)
            self._failing = True
            await self._failed(rows, outcome, now, seconds)

    async def _recovered(self, now: float) -> None:
        """The endpoint answered 2xx after failures: its rows waiting out a backoff are due
        now, instead of minutes or hours later. The fetch keeps each relationship's order and
        the calls still go through the concurrency and rate limits."""
        self._failing = False
        moved = await self._store.outbox_bring_forward(self.name, now)
        if moved:
            log.info("webhook sink %s: endpoint answers again; %d events waiting to be retried "
                     "are due now", self.name, moved)
            self._wake.set()

    async def _failed(
        self, rows: list[OutboxRow], outcome: Outcome, now: float, seconds: float
    ) -> None:
        retries: list[tuple[int, float, int, str | None]] = []
        dead_rows: list[tuple[int, str]] = []
        for r in rows:
            attempts = r.attempts + 1
            delay = next_delay(attempts, self._schedule, draw=self._rand())
            if delay is None:
                dead_rows.append((r.row_id, f"gave up after {attempts} attempts: {outcome.detail}"))
            else:
                self._soonest = min(self._soonest, now + delay)
                retries.append((r.row_id, now + delay, attempts, outcome.detail))
        await self._store.outbox_settle_failed(retries, dead_rows, now)  # one transaction
        dead = len(dead_rows)
        self._pending = max(0, self._pending - dead)
        self._metrics.webhook_delivery(self.name, "dead" if dead else "retry", seconds)
        if dead:
            self._metrics.dead_lettered(self.name, dead)
            log.warning("webhook sink %s: %s events dead-lettered (%s)",
                        self.name, dead, outcome.detail)
        else:
            log.debug("webhook sink %s: delivery failed, will retry (%s)",
                      self.name, outcome.detail)

    # -- reporting ---------------------------------------------------------------------------

    def _report_health(self) -> None:
        state = self._breaker.state
        if state is not self._reported_circuit:
            self._reported_circuit = state
            self._metrics.circuit_state(self.name, state.value)
        up = self.healthy()
        if up is not self._reported_up:
            if self._reported_up is not None and not self._gone:
                # One line per outage, not one per half-open probe.
                if up:
                    log.warning("webhook sink %s: endpoint recovered, circuit closed", self.name)
                else:
                    log.warning("webhook sink %s: endpoint failing, circuit open; calls paused "
                                "and retried every %ss", self.name, self._breaker.reset_after)
            self._reported_up = up
            self._metrics.sink_up(self.name, up)

    async def _report_outbox(self) -> None:
        try:
            stats = await self._store.outbox_stats(self.name)
        except NotifierError as exc:
            log.warning("webhook sink %s: outbox stats failed: %s", self.name, exc)
            return
        self._pending, self._pending_at = stats.pending_count, time.monotonic()
        oldest = stats.oldest_pending_created_at
        age = self._clock() - oldest if oldest is not None else 0.0
        self._metrics.outbox_state(self.name, stats.pending_count, age, stats.dead_count)
        try:
            purged = await self._store.outbox_purge_delivered(
                self.name, self._clock() - float(self._cfg.delivered_retention)
            )
        except NotifierError as exc:
            log.warning("webhook sink %s: purging delivered rows failed: %s", self.name, exc)
            return
        if purged:
            log.info("webhook sink %s: purged %d delivered events older than the retention",
                     self.name, purged)
