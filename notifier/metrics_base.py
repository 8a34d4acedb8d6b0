"""The base of ``Metrics``: the registry, collector factories, bounded label values.

Names follow ``notifier_<subsystem>_<what>_<unit>`` in base units; counters end in ``_total``.
Label values are bounded: closed sets (outcome, kind, reason, class, state) are checked by
``_bounded``, anything unexpected is counted as ``other``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger("notifier.metrics")

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
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CYCLE_BUCKETS = (0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
AGE_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
LAG_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
PUBLISH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PAGE_BYTES_BUCKETS = tuple(1024 * 4**k for k in range(9))  # 1 KiB .. 64 MiB


def flag(value: bool) -> str:
    return "true" if value else "false"


def nonneg(value: float) -> float:
    return value if value > 0 else 0.0


class MetricsBase:
    """A registry and the helpers every group of metrics uses."""

    def __init__(self, registry: CollectorRegistry | None = None, *, runtime: bool = True) -> None:
        """Use ``registry`` (a new one by default).

        ``runtime`` also registers the process, platform and GC collectors, so a private
        registry exposes memory, CPU and file descriptors like the default one does.
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        if runtime:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._warned: set[tuple[str, str]] = set()

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float], *labels: str
                   ) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def _bounded(self, what: str, value: object, allowed: tuple[str, ...]) -> str:
        """Return ``value`` if it is one of ``allowed``, else ``other`` (warned once)."""
        text = str(value.value) if isinstance(value, Enum) else str(value)
        if text in allowed:
            return text
        if (what, text) not in self._warned and len(self._warned) < 100:
            self._warned.add((what, text))
            log.warning("unexpected %s %r counted as %r in metrics", what, text, OTHER)
        return OTHER
