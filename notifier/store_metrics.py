"""Prometheus metrics of the state store's health, on the ``Metrics`` registry
(``metrics.store``): is it accepting work, and how its operations failed (a closed set of
kinds, from SQLite's result codes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

STORE_ERROR_KINDS = ("busy", "full", "io", "other")


class StoreMetrics:
    """Collectors and intent-named methods for the state store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._errors = Counter(
            "notifier_state_store_errors_total",
            "State store operations that failed and paused work, by kind (busy: locked past "
            "state.busy_timeout, full: disk full, io: I/O error, other).",
            ["kind"], registry=registry)
        self._up = Gauge(
            "notifier_state_store_up",
            "1 while the state store accepts writes, 0 while it fails (work paused).",
            registry=registry)
        for kind in STORE_ERROR_KINDS:  # created at zero: alerts see the first rise
            self._errors.labels(kind)
        self._up.set(1)

    def failed(self, kind: str) -> None:
        """An operation failed with ``kind``: the store is down until a write succeeds."""
        self._errors.labels(kind if kind in STORE_ERROR_KINDS else "other").inc()
        self._up.set(0)

    def works(self) -> None:
        """A write was committed: the store is up (again)."""
        self._up.set(1)
