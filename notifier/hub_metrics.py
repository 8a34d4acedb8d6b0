"""Prometheus metrics of hub discovery, registered on the ``Metrics`` registry (``metrics.hubs``).

The ``subscription`` label takes only the names of hub subscriptions (from the configuration:
a handful), never project or container ids. Outcomes are a closed set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

DISCOVERY_OUTCOMES = ("ok", "forbidden", "not_found", "rate_limited", "server_error",
                      "transport_error", "protocol_error", "unauthorized", "credential",
                      "state_store", "error")


class HubMetrics:
    """Collectors and intent-named methods for hub discovery."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._projects = Gauge(
            "notifier_hub_projects", "Projects of the hub watched now (after include/exclude).",
            ["subscription"], registry=r)
        self._listed = Gauge(
            "notifier_hub_projects_listed", "Projects the last successful discovery listed.",
            ["subscription"], registry=r)
        self._added = Counter(
            "notifier_hub_projects_added_total", "Projects that started being watched.",
            ["subscription"], registry=r)
        self._retired = Counter(
            "notifier_hub_projects_retired_total",
            "Projects that stopped being watched (gone from the list or filtered out).",
            ["subscription"], registry=r)
        self._discoveries = Counter(
            "notifier_hub_discoveries_total", "Hub discoveries, by outcome.",
            ["subscription", "outcome"], registry=r)
        self._last_success = Gauge(
            "notifier_hub_last_discovery_timestamp_seconds",
            "Unix time of the last successful discovery (0: none since start).",
            ["subscription"], registry=r)
        self._failing = Gauge(
            "notifier_hub_discovery_consecutive_failures",
            "Discoveries failed in a row (the last known project list is kept meanwhile).",
            ["subscription"], registry=r)

    def configured(self, subscription: str) -> None:
        """Create the subscription's series at zero, so alerts see the first rise."""
        for outcome in DISCOVERY_OUTCOMES:
            self._discoveries.labels(subscription, outcome)
        for collector in (self._projects, self._listed, self._added, self._retired,
                          self._last_success, self._failing):
            collector.labels(subscription)

    def discovered(self, subscription: str, *, listed: int, watched: int, added: int,
                   retired: int, at: float) -> None:
        self._discoveries.labels(subscription, "ok").inc()
        self._listed.labels(subscription).set(listed)
        self._projects.labels(subscription).set(watched)
        self._added.labels(subscription).inc(added)
        self._retired.labels(subscription).inc(retired)
        self._last_success.labels(subscription).set(at)
        self._failing.labels(subscription).set(0)

    def discovery_failed(self, subscription: str, outcome: str, consecutive: int) -> None:
        if outcome not in DISCOVERY_OUTCOMES:
            outcome = "error"
        self._discoveries.labels(subscription, outcome).inc()
        self._failing.labels(subscription).set(consecutive)
