"""Prometheus metrics: every collector of the notifier, behind intent-named methods.

Call sites say what happened (``metrics.page_synced(...)``) and never touch a collector. Names
follow ``notifier_<subsystem>_<what>_<unit>`` in base units; counters end in ``_total``. Label
values are bounded: credential, sink and endpoint names come from the configuration, and closed
sets (outcome, kind, reason, class, state) are checked here, anything unexpected is counted as
``other``. Subscriptions, container ids, tokens and URLs never become label values.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Info
from prometheus_client.exposition import choose_encoder

from notifier.cluster_metrics import ClusterMetrics
from notifier.core.credential_health import DEAD_OUTCOMES
from notifier.hub_metrics import HubMetrics
from notifier.metrics_base import (
    AGE_BUCKETS,
    CYCLE_BUCKETS,
    EVENT_KINDS,
    LAG_BUCKETS,
    PAGE_BYTES_BUCKETS,
    QUARANTINE_REASONS,
    REFRESH_OUTCOMES,
    REQUEST_BUCKETS,
    STALENESS_CLASSES,
    UPSTREAM_OUTCOMES,
    WAIT_BUCKETS,
    BulkHistogram,
    GaugeSnapshot,
    flag,
    nonneg,
)
from notifier.metrics_observer import CredentialObserver
from notifier.metrics_sinks import SinkMetrics
from notifier.metrics_tally import CounterTally, HistogramTally
from notifier.store_metrics import StoreMetrics


class Metrics(SinkMetrics):
    """All of the notifier's metrics, registered on one (injected) registry.

    The sink metrics live in notifier.metrics_sinks, the shared helpers in
    notifier.metrics_base, hub discovery's in notifier.hub_metrics (``metrics.hubs``), the
    state store's in notifier.store_metrics (``metrics.store``); this class adds upstream,
    auth, scheduling, sync and process.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, runtime: bool = True) -> None:
        """Register every collector on ``registry`` (a new one by default).

        ``runtime`` also registers the process, platform and GC collectors, so a private
        registry exposes memory, CPU and file descriptors like the default one does.
        """
        super().__init__(registry, runtime=runtime)
        r = self.registry
        self._credentials: set[str] = set()
        self._status_series: dict[str, tuple[CounterTally, CounterTally]] = {}
        self.hubs = HubMetrics(r)  # hub discovery (its own module: notifier/hub_metrics.py)
        self.store = StoreMetrics(r)  # state store health (notifier/store_metrics.py)
        self.cluster = ClusterMetrics(r)  # cluster mode (notifier/cluster_metrics.py)
        counter, gauge, histogram = self._counter, self._gauge, self._histogram

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
            REQUEST_BUCKETS,
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
            WAIT_BUCKETS,
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
            CYCLE_BUCKETS,
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
        self._age = BulkHistogram(
            "notifier_scheduler_check_age_seconds",
            "Ages of streams' last successful checks, sampled by class.",
            AGE_BUCKETS,
            "class",
            r,
        )
        self._stalest = gauge(
            "notifier_scheduler_stalest_check_age_seconds",
            "Age of the stalest stream's last successful check.",
        )
        self._subscription_age = GaugeSnapshot(
            "notifier_scheduler_subscription_check_age_seconds",
            "Age of the last successful check of each subscription's stalest (not quarantined) "
            "stream; one series per configured subscription.",
            "subscription",
            r,
        )
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
            PAGE_BYTES_BUCKETS,
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
            LAG_BUCKETS,
        )
        self._checkpoints = counter(
            "notifier_sync_checkpoints_total",
            "Sync tokens committed after every sink acknowledged.",
        )
        self._init_sinks()
        # process
        self._build = Info("notifier_build", "Version of the running notifier.", registry=r)
        self._loop_lag = gauge(
            "notifier_event_loop_lag_seconds",
            "How late the event loop ran a timer at the last watchdog tick.",
        )

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

    # -- upstream ----------------------------------------------------------------------------------

    def upstream_request(
        self, credential: str, endpoint: str, outcome: str, seconds: float
    ) -> None:
        """One request to the Relationship Service finished (or failed) after ``seconds``."""
        count, duration = self.upstream_series(credential, endpoint, outcome)
        count.value += 1.0
        duration.observe(seconds)

    def upstream_series(self, credential: str, endpoint: str, outcome: str
                        ) -> tuple[CounterTally, HistogramTally]:
        """The request count and duration series ``upstream_request`` updates, as tallies
        handed to Prometheus at each scrape (an observer keeps them: one pair per endpoint
        and outcome, used for every request)."""
        credential = self._credential(credential)
        outcome = self._bounded("upstream outcome", outcome, UPSTREAM_OUTCOMES)
        return (self._counter_tally(self._upstream_requests, credential, endpoint, outcome),
                self._histogram_tally(self._upstream_duration, credential, endpoint))

    def rate_limited(self, credential: str, retry_after_seconds: float) -> None:
        """A 429 arrived; the caller waits ``retry_after_seconds`` before trying again."""
        credential = self._credential(credential)
        self._rate_limited.labels(credential).inc()
        self._retry_after.labels(credential).inc(nonneg(retry_after_seconds))

    def budget_acquired(self, credential: str, priority: str, waited_seconds: float) -> None:
        """A request slot was taken from the credential's budget after waiting."""
        count, wait = self.budget_series(credential, priority)
        count.value += 1.0
        wait.observe(waited_seconds)

    def budget_series(self, credential: str, priority: str
                      ) -> tuple[CounterTally, HistogramTally]:
        """The series ``budget_acquired`` updates (tallies kept by an observer, as above)."""
        credential = self._credential(credential)
        return (self._counter_tally(self._budget_acquired, credential, priority),
                self._histogram_tally(self._budget_wait, credential, priority))

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
        """One syncStatus call checked ``tokens`` sync tokens (once per container check:
        tallies, handed to Prometheus at each scrape)."""
        series = self._status_series.get(credential)
        if series is None:
            name = self._credential(credential)
            series = self._status_series[credential] = (
                self._counter_tally(self._status_calls, name),
                self._counter_tally(self._status_tokens, name))
        series[0].value += 1.0
        series[1].inc(tokens)

    def cycle_completed(self, credential: str, seconds: float, streams_checked: int) -> None:
        """A full pass over the credential's streams took ``seconds``."""
        credential = self._credential(credential)
        self._cycles.labels(credential).inc()
        self._cycle_duration.labels(credential).observe(nonneg(seconds))
        self._streams_checked.labels(credential).inc(nonneg(streams_checked))

    def effective_interval(self, credential: str, seconds: float) -> None:
        """A full pass over the credential's streams now takes ``seconds``."""
        self._effective_interval.labels(self._credential(credential)).set(nonneg(seconds))

    def staleness(self, klass: str, ages_seconds: Iterable[float]) -> None:
        """Record the ages of the last successful checks of one class (busy or quiet)."""
        klass = self._bounded("staleness class", klass, STALENESS_CLASSES)
        ages = [age if age > 0.0 else 0.0 for age in ages_seconds]
        self._age.observe_all(klass, ages)
        self._age_max.labels(klass).set(max(ages, default=0.0))

    def stalest_check_age(self, seconds: float) -> None:
        """The stalest stream's last successful check is ``seconds`` old."""
        self._stalest.set(nonneg(seconds))

    def subscription_check_ages(self, ages: Mapping[str, float]) -> None:
        """Per subscription, how old the last successful check of its stalest stream is.

        Subscriptions are configuration, so the label is bounded; series of subscriptions that
        are gone (or now all quarantined) are removed.
        """
        self._subscription_age.set_all(ages)

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
        self._pages.labels(credential, flag(overwrite)).inc()
        self._relationships.labels(credential).inc(nonneg(relationships))
        self._page_bytes.labels(credential).observe(nonneg(size_bytes))

    def events_detected(self, kind: str, snapshot: bool, n: int) -> None:
        """``n`` changes of ``kind`` (created or deleted) were detected."""
        kind = self._bounded("event kind", kind, EVENT_KINDS)
        self._detected.labels(kind, flag(snapshot)).inc(nonneg(n))

    def detection_lag(self, seconds: float) -> None:
        """A change was published ``seconds`` after its createdOn/deletedOn."""
        self._detection_lag.observe(nonneg(seconds))

    def checkpoint_committed(self, n: int = 1) -> None:
        """``n`` sync tokens were committed."""
        self._checkpoints.inc(nonneg(n))

    # -- process -----------------------------------------------------------------------------------

    def build_info(self, version: str, python: str = platform.python_version()) -> None:
        """Export ``notifier_build_info{version, python} 1``."""
        self._build.info({"version": version, "python": python})

    def loop_lag(self, seconds: float) -> None:
        """The event loop ran a timer ``seconds`` late (set by the server's watchdog)."""
        self._loop_lag.set(nonneg(seconds))

    # -- exposition --------------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Return (body, content type) of a scrape; text 0.0.4 unless ``accept`` asks otherwise."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
