"""Prometheus metrics: every collector of the notifier, behind intent-named methods.

Call sites say what happened (``metrics.page_synced(...)``) and never touch a collector. Names
follow ``notifier_<subsystem>_<what>_<unit>`` in base units; counters end in ``_total``. Label
values are bounded: credential, sink and endpoint names come from the configuration, and closed
sets (outcome, kind, reason, class, state) are checked here, anything unexpected is counted as
``other``. Subscriptions, container ids, tokens and URLs never become label values.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from notifier.core.credential_health import DEAD_OUTCOMES
from notifier.hub_metrics import HubMetrics

log = logging.getLogger(__name__)

UPSTREAM_OUTCOMES = (
    "ok",
    "rate_limited",
    "server_error",
    "client_error",
    "transport_error",
    "protocol_error",
    "unauthorized",
)
# invalid_grant: the refresh token is spent or expired (re-seed needed); rejected, unavailable
# and store_failed are the auth module's finer kinds of error.
REFRESH_OUTCOMES = ("ok", "invalid_grant", "missing", "error", "rejected", "unavailable",
                    "store_failed")
STALENESS_CLASSES = ("busy", "quiet")
QUARANTINE_REASONS = ("bad_token", "malformed_page", "gone", "forbidden", "error")
EVENT_KINDS = ("created", "deleted")
PUBLISH_OUTCOMES = ("ok", "error")
WEBHOOK_OUTCOMES = ("ok", "retry", "gone", "dead", "rate_limited", "circuit_open")
CIRCUIT_STATES = ("closed", "open", "half_open")
OTHER = "other"

# Bucket boundaries, in seconds unless named otherwise.
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CYCLE_BUCKETS = (0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_AGE_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_LAG_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
_PUBLISH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_PAGE_BYTES_BUCKETS = tuple(1024 * 4**k for k in range(9))  # 1 KiB .. 64 MiB


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _nonneg(value: float) -> float:
    return value if value > 0 else 0.0


class Metrics:
    """All of the notifier's metrics, registered on one (injected) registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, runtime: bool = True) -> None:
        """Register every collector on ``registry`` (a new one by default).

        ``runtime`` also registers the process, platform and GC collectors, so a private
        registry exposes memory, CPU and file descriptors like the default one does.
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if runtime:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self._warned: set[tuple[str, str]] = set()
        self._credentials: set[str] = set()
        self._sinks: set[str] = set()
        self._circuit_states: dict[str, set[str]] = {}
        self.hubs = HubMetrics(r)  # hub discovery (its own module: notifier/hub_metrics.py)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: Sequence[float], *labels: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        # upstream
        self._upstream_requests = counter(
            "notifier_upstream_requests_total",
            "Requests to the Relationship Service, by endpoint and outcome.",
            "credential",
            "endpoint",
            "outcome",
        )
        self._upstream_duration = histogram(
            "notifier_upstream_request_duration_seconds",
            "Latency of requests to the Relationship Service.",
            _REQUEST_BUCKETS,
            "credential",
            "endpoint",
        )
        self._rate_limited = counter(
            "notifier_upstream_rate_limited_total",
            "HTTP 429 answers from the Relationship Service.",
            "credential",
        )
        self._retry_after = counter(
            "notifier_upstream_retry_after_seconds_total",
            "Seconds spent waiting on Retry-After after a 429.",
            "credential",
        )
        # budget
        self._budget_acquired = counter(
            "notifier_budget_acquired_total",
            "Request slots taken from a credential's rate budget.",
            "credential",
            "priority",
        )
        self._budget_wait = histogram(
            "notifier_budget_wait_seconds",
            "Time spent waiting for a slot of a credential's rate budget.",
            _WAIT_BUCKETS,
            "credential",
            "priority",
        )
        self._budget_limit = gauge(
            "notifier_budget_limit_requests_per_second",
            "Configured request budget of a credential (requests_per_minute / 60).",
            "credential",
        )
        # auth
        self._refreshes = counter(
            "notifier_auth_token_refreshes_total",
            "OAuth refresh-token grants, by outcome (invalid_grant: re-seed needed).",
            "credential",
            "outcome",
        )
        self._refresh_failures = gauge(
            "notifier_auth_refresh_consecutive_failures",
            "Refresh-token grants failed in a row for a credential (0 after a success).",
            "credential",
        )
        self._credential_up = gauge(
            "notifier_auth_credential_up",
            "1 while a credential obtains access tokens; 0 once Autodesk rejected its refresh "
            "token or client (dead until re-seeded), so an alert on it stays firing.",
            "credential",
        )
        # scheduler
        self._streams = gauge(
            "notifier_scheduler_streams_tracked",
            "Sync streams (subscription, container) the scheduler tracks.",
        )
        self._status_calls = counter(
            "notifier_scheduler_status_calls_total", "syncStatus calls made.", "credential"
        )
        self._status_tokens = counter(
            "notifier_scheduler_status_tokens_total",
            "Sync tokens checked through syncStatus.",
            "credential",
        )
        self._cycles = counter(
            "notifier_scheduler_cycles_total",
            "Full passes over a credential's streams.",
            "credential",
        )
        self._cycle_duration = histogram(
            "notifier_scheduler_cycle_duration_seconds",
            "Duration of a full pass over a credential's streams.",
            _CYCLE_BUCKETS,
            "credential",
        )
        self._streams_checked = counter(
            "notifier_scheduler_streams_checked_total",
            "Streams checked in completed passes.",
            "credential",
        )
        self._effective_interval = gauge(
            "notifier_scheduler_effective_interval_seconds",
            "How long a full pass over a credential's streams takes now (the stretched interval).",
            "credential",
        )
        self._age_max = gauge(
            "notifier_scheduler_check_age_max_seconds",
            "Age of the oldest last successful check among streams of a class.",
            "class",
        )
        self._age = histogram(
            "notifier_scheduler_check_age_seconds",
            "Ages of streams' last successful checks, sampled by class.",
            _AGE_BUCKETS,
            "class",
        )
        self._stalest = gauge(
            "notifier_scheduler_stalest_check_age_seconds",
            "Age of the stalest stream's last successful check.",
        )
        self._subscription_age = gauge(
            "notifier_scheduler_subscription_check_age_seconds",
            "Age of the last successful check of each subscription's stalest (not quarantined) "
            "stream; one series per configured subscription.",
            "subscription",
        )
        self._subscriptions_seen: set[str] = set()
        self._quarantined = gauge(
            "notifier_scheduler_quarantined_streams",
            "Streams currently quarantined (not polled until fixed or retried).",
        )
        self._quarantines = counter(
            "notifier_scheduler_quarantines_total",
            "Streams put in quarantine, by reason.",
            "reason",
        )
        # sync
        self._pages = counter(
            "notifier_sync_pages_total", "Sync pages fetched.", "credential", "overwrite"
        )
        self._relationships = counter(
            "notifier_sync_relationships_total",
            "Relationships (current and deleted) received in sync pages.",
            "credential",
        )
        self._page_bytes = histogram(
            "notifier_sync_page_size_bytes",
            "Size of sync page bodies.",
            _PAGE_BYTES_BUCKETS,
            "credential",
        )
        self._detected = counter(
            "notifier_sync_events_detected_total",
            "Changes detected, by kind and whether they come from a snapshot.",
            "kind",
            "snapshot",
        )
        self._detection_lag = histogram(
            "notifier_sync_detection_lag_seconds",
            "Time from a relationship's createdOn/deletedOn to its event being published "
            "(sampled: at most 16 events per page).",
            _LAG_BUCKETS,
        )
        self._checkpoints = counter(
            "notifier_sync_checkpoints_total",
            "Sync tokens committed after every sink acknowledged.",
        )
        # sinks
        self._published = counter(
            "notifier_sink_events_published_total",
            "Events handed to a sink, by outcome.",
            "sink",
            "outcome",
        )
        self._publish_duration = histogram(
            "notifier_sink_publish_duration_seconds",
            "Time for a sink to durably accept a batch.",
            _PUBLISH_BUCKETS,
            "sink",
        )
        self._sink_up = gauge(
            "notifier_sink_up", "1 while a sink's destination is reachable, else 0.", "sink"
        )
        self._kafka_internals_missing = gauge(
            "notifier_sink_kafka_internals_missing",
            "1 if the installed aiokafka lacks the internals the Kafka sink uses to abandon a "
            "dead producer (stopping one while the broker is down may then hang), else 0.",
            "sink",
        )
        self._outbox_pending = gauge(
            "notifier_outbox_pending_events", "Events waiting in a sink's outbox.", "sink"
        )
        self._outbox_age = gauge(
            "notifier_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in a sink's outbox.",
            "sink",
        )
        self._outbox_dead = gauge(
            "notifier_outbox_dead_events", "Dead-lettered events kept in a sink's outbox.", "sink"
        )
        self._dead_lettered = counter(
            "notifier_outbox_dead_lettered_total", "Events moved to the dead letters.", "sink"
        )
        self._deliveries = counter(
            "notifier_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome.",
            "sink",
            "outcome",
        )
        self._delivery_duration = histogram(
            "notifier_webhook_delivery_duration_seconds",
            "Duration of webhook delivery attempts.",
            _DELIVERY_BUCKETS,
            "sink",
        )
        self._circuit = gauge(
            "notifier_webhook_circuit_state",
            "1 for a webhook sink's current circuit-breaker state, 0 for the others.",
            "sink",
            "state",
        )
        # process
        self._build = Info("notifier_build", "Version of the running notifier.", registry=r)
        self._loop_lag = gauge(
            "notifier_event_loop_lag_seconds",
            "How late the event loop ran a timer at the last watchdog tick.",
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _bounded(self, what: str, value: object, allowed: tuple[str, ...]) -> str:
        """Return ``value`` if it is one of ``allowed``, else ``other`` (warned once)."""
        text = str(value.value) if isinstance(value, Enum) else str(value)
        if text in allowed:
            return text
        if (what, text) not in self._warned and len(self._warned) < 100:
            self._warned.add((what, text))
            log.warning("unexpected %s %r counted as %r in metrics", what, text, OTHER)
        return OTHER

    def _credential(self, credential: str) -> str:
        """Create a credential's alerting series at zero, so the first failure shows as a rise."""
        if credential not in self._credentials:
            self._credentials.add(credential)
            for outcome in REFRESH_OUTCOMES:
                self._refreshes.labels(credential, outcome)
            self._refresh_failures.labels(credential)
            self._rate_limited.labels(credential)
            self._retry_after.labels(credential)
        return credential

    def _sink(self, sink: str) -> str:
        """Create a sink's alerting series at zero, so the first failure shows as a rise."""
        if sink not in self._sinks:
            self._sinks.add(sink)
            for outcome in PUBLISH_OUTCOMES:
                self._published.labels(sink, outcome)
            self._dead_lettered.labels(sink)
        return sink

    # -- upstream ----------------------------------------------------------------------------------

    def upstream_request(
        self, credential: str, endpoint: str, outcome: str, seconds: float
    ) -> None:
        """One request to the Relationship Service finished (or failed) after ``seconds``."""
        credential = self._credential(credential)
        outcome = self._bounded("upstream outcome", outcome, UPSTREAM_OUTCOMES)
        self._upstream_requests.labels(credential, endpoint, outcome).inc()
        self._upstream_duration.labels(credential, endpoint).observe(_nonneg(seconds))

    def rate_limited(self, credential: str, retry_after_seconds: float) -> None:
        """A 429 arrived; the caller waits ``retry_after_seconds`` before trying again."""
        credential = self._credential(credential)
        self._rate_limited.labels(credential).inc()
        self._retry_after.labels(credential).inc(_nonneg(retry_after_seconds))

    def budget_acquired(self, credential: str, priority: str, waited_seconds: float) -> None:
        """A request slot was taken from the credential's budget after waiting."""
        credential = self._credential(credential)
        self._budget_acquired.labels(credential, priority).inc()
        self._budget_wait.labels(credential, priority).observe(_nonneg(waited_seconds))

    def budget_configured(self, credential: str, requests_per_minute: float) -> None:
        """The credential's budget is ``requests_per_minute`` (exported per second)."""
        credential = self._credential(credential)
        self._budget_limit.labels(credential).set(requests_per_minute / 60.0)

    def token_refresh(self, credential: str, outcome: str) -> None:
        """A refresh-token grant ended with ``outcome`` (ok, invalid_grant, error, ...)."""
        credential = self._credential(credential)
        outcome = self._bounded("refresh outcome", outcome, REFRESH_OUTCOMES)
        self._refreshes.labels(credential, outcome).inc()
        if outcome == "ok":
            self._refresh_failures.labels(credential).set(0)
            self._credential_up.labels(credential).set(1)
        else:
            self._refresh_failures.labels(credential).inc()
            if outcome in DEAD_OUTCOMES:  # transient failures (unavailable) leave it as it was
                self._credential_up.labels(credential).set(0)

    def on_refresh(self, credential: str, outcome: str) -> None:
        """``RefreshObserver`` hook of notifier.source.auth: same as ``token_refresh``."""
        self.token_refresh(credential, outcome)

    def client_observer(self, credential: str) -> CredentialObserver:
        """A ``ClientObserver`` for notifier.source.client that labels with ``credential``."""
        return CredentialObserver(self, self._credential(credential))

    # -- scheduling --------------------------------------------------------------------------------

    def streams_tracked(self, n: int) -> None:
        """The scheduler now tracks ``n`` streams."""
        self._streams.set(n)

    def status_checked(self, credential: str, tokens: int) -> None:
        """One syncStatus call checked ``tokens`` sync tokens."""
        credential = self._credential(credential)
        self._status_calls.labels(credential).inc()
        self._status_tokens.labels(credential).inc(_nonneg(tokens))

    def cycle_completed(self, credential: str, seconds: float, streams_checked: int) -> None:
        """A full pass over the credential's streams took ``seconds``."""
        credential = self._credential(credential)
        self._cycles.labels(credential).inc()
        self._cycle_duration.labels(credential).observe(_nonneg(seconds))
        self._streams_checked.labels(credential).inc(_nonneg(streams_checked))

    def effective_interval(self, credential: str, seconds: float) -> None:
        """A full pass over the credential's streams now takes ``seconds``."""
        self._effective_interval.labels(self._credential(credential)).set(_nonneg(seconds))

    def staleness(self, klass: str, ages_seconds: Iterable[float]) -> None:
        """Record the ages of the last successful checks of one class (busy or quiet)."""
        klass = self._bounded("staleness class", klass, STALENESS_CLASSES)
        histogram = self._age.labels(klass)
        oldest = 0.0
        for raw in ages_seconds:
            age = _nonneg(raw)
            histogram.observe(age)
            oldest = max(oldest, age)
        self._age_max.labels(klass).set(oldest)

    def stalest_check_age(self, seconds: float) -> None:
        """The stalest stream's last successful check is ``seconds`` old."""
        self._stalest.set(_nonneg(seconds))

    def subscription_check_ages(self, ages: Mapping[str, float]) -> None:
        """Per subscription, how old the last successful check of its stalest stream is.

        Subscriptions are configuration, so the label is bounded; series of subscriptions that
        are gone (or now all quarantined) are removed.
        """
        for gone in self._subscriptions_seen - set(ages):
            self._subscription_age.remove(gone)
        for name, seconds in ages.items():
            self._subscription_age.labels(name).set(_nonneg(seconds))
        self._subscriptions_seen = set(ages)

    def quarantined(self, n: int) -> None:
        """``n`` streams are quarantined now."""
        self._quarantined.set(n)

    def stream_quarantined(self, reason: str) -> None:
        """A stream was put in quarantine for ``reason``."""
        reason = self._bounded("quarantine reason", reason, QUARANTINE_REASONS)
        self._quarantines.labels(reason).inc()

    # -- sync --------------------------------------------------------------------------------------

    def page_synced(
        self, credential: str, overwrite: bool, relationships: int, size_bytes: int
    ) -> None:
        """A sync page of ``size_bytes`` carrying ``relationships`` relationships arrived."""
        credential = self._credential(credential)
        self._pages.labels(credential, _flag(overwrite)).inc()
        self._relationships.labels(credential).inc(_nonneg(relationships))
        self._page_bytes.labels(credential).observe(_nonneg(size_bytes))

    def events_detected(self, kind: str, snapshot: bool, n: int) -> None:
        """``n`` changes of ``kind`` (created or deleted) were detected."""
        kind = self._bounded("event kind", kind, EVENT_KINDS)
        self._detected.labels(kind, _flag(snapshot)).inc(_nonneg(n))

    def detection_lag(self, seconds: float) -> None:
        """A change was published ``seconds`` after its createdOn/deletedOn."""
        self._detection_lag.observe(_nonneg(seconds))

    def checkpoint_committed(self, n: int = 1) -> None:
        """``n`` sync tokens were committed."""
        self._checkpoints.inc(_nonneg(n))

    # -- sinks -------------------------------------------------------------------------------------

    def events_published(self, sink: str, outcome: str, n: int) -> None:
        """``n`` events were accepted by (ok) or failed at (error) ``sink``."""
        sink = self._sink(sink)
        outcome = self._bounded("publish outcome", outcome, PUBLISH_OUTCOMES)
        self._published.labels(sink, outcome).inc(_nonneg(n))

    def publish_latency(self, sink: str, seconds: float) -> None:
        """A batch took ``seconds`` to be durably accepted by ``sink``."""
        self._publish_duration.labels(self._sink(sink)).observe(_nonneg(seconds))

    def sink_up(self, sink: str, up: bool) -> None:
        """``sink``'s destination is reachable (or not)."""
        self._sink_up.labels(self._sink(sink)).set(1 if up else 0)

    def kafka_internals_missing(self, sink: str, missing: bool) -> None:
        """Whether the aiokafka internals ``sink`` relies on to stop a dead producer are there."""
        self._kafka_internals_missing.labels(self._sink(sink)).set(1 if missing else 0)

    def outbox_state(self, sink: str, pending: int, oldest_age_seconds: float, dead: int) -> None:
        """Current size and age of ``sink``'s outbox."""
        sink = self._sink(sink)
        self._outbox_pending.labels(sink).set(pending)
        self._outbox_age.labels(sink).set(_nonneg(oldest_age_seconds))
        self._outbox_dead.labels(sink).set(dead)

    def webhook_delivery(self, sink: str, outcome: str, seconds: float) -> None:
        """One webhook delivery attempt ended with ``outcome`` after ``seconds``."""
        sink = self._sink(sink)
        outcome = self._bounded("webhook outcome", outcome, WEBHOOK_OUTCOMES)
        self._deliveries.labels(sink, outcome).inc()
        self._delivery_duration.labels(sink).observe(_nonneg(seconds))

    def circuit_state(self, sink: str, state: str) -> None:
        """``sink``'s circuit breaker is now in ``state`` (closed, open or half_open)."""
        sink = self._sink(sink)
        state = self._bounded("circuit state", state, CIRCUIT_STATES)
        states = self._circuit_states.setdefault(sink, set(CIRCUIT_STATES))
        states.add(state)
        for each in states:
            self._circuit.labels(sink, each).set(1 if each == state else 0)

    def dead_lettered(self, sink: str, n: int) -> None:
        """``n`` events of ``sink`` were given up on and dead-lettered."""
        self._dead_lettered.labels(self._sink(sink)).inc(_nonneg(n))

    # -- process -----------------------------------------------------------------------------------

    def build_info(self, version: str, python: str = platform.python_version()) -> None:
        """Export ``notifier_build_info{version, python} 1``."""
        self._build.info({"version": version, "python": python})

    def loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer ``seconds`` late (set by the server's watchdog)."""
        self._loop_lag.set(_nonneg(seconds))

    # -- exposition --------------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Return (body, content type) of a scrape; text 0.0.4 unless ``accept`` asks otherwise."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class CredentialObserver:
    """Upstream-client hooks bound to one credential (the client does not pass it)."""

    def __init__(self, metrics: Metrics, credential: str) -> None:
        self._metrics = metrics
        self.credential = credential

    def on_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self._metrics.upstream_request(self.credential, endpoint, outcome, seconds)

    def on_rate_limited(self, retry_after_seconds: float) -> None:
        self._metrics.rate_limited(self.credential, retry_after_seconds)

    def on_budget(self, priority: str, waited_seconds: float) -> None:
        self._metrics.budget_acquired(self.credential, priority, waited_seconds)
