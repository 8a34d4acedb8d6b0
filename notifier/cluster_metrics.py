"""Prometheus metrics of cluster mode, registered on the ``Metrics`` registry (``metrics.cluster``).

Every series exists from the start (zero), so alerts see a rise from zero; labels are closed
sets (``change``, ``outcome``), never partition numbers or credential names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RESTORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ClusterMetrics:
    """Collectors and intent-named methods for partition ownership, restores and transactions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._owned = Gauge("notifier_cluster_owned_partitions",
                            "Work partitions this replica owns (restoring ones included).",
                            registry=r)
        self._restoring = Gauge("notifier_cluster_restoring_partitions",
                                "Work partitions being restored from the state topic.",
                                registry=r)
        self._restored = Counter("notifier_cluster_restore_records_total",
                                 "State-topic records applied by restores.", registry=r)
        self._restore_seconds = Histogram("notifier_cluster_restore_seconds",
                                          "Time to restore one work partition.",
                                          buckets=RESTORE_BUCKETS, registry=r)
        self._unreadable = Gauge("notifier_cluster_unreadable_partitions",
                                 "Owned work partitions not running because their state holds "
                                 "a record this release cannot read.", registry=r)
        self._strays = Gauge("notifier_cluster_stray_streams",
                             "Streams whose state an owned work partition holds but the "
                             "configuration puts elsewhere or nowhere (kept for "
                             "state.orphan_retention, not polled).", registry=r)
        self._rebalances = Counter("notifier_cluster_rebalances_total",
                                   "Work partitions assigned to or revoked from this replica.",
                                   ["change"], registry=r)
        self._fenced = Counter("notifier_cluster_fenced_total",
                               "Transactions refused because a newer owner fenced this replica.",
                               registry=r)
        self._transactions = Counter("notifier_cluster_transactions_total",
                                     "Kafka transactions of the work partitions, by outcome.",
                                     ["outcome"], registry=r)
        for change in ("assigned", "revoked"):
            self._rebalances.labels(change)
        for outcome in ("committed", "aborted"):
            self._transactions.labels(outcome)

    def owned(self, count: int) -> None:
        self._owned.set(count)

    def restoring(self, count: int) -> None:
        self._restoring.set(count)

    def restored(self, records: int, seconds: float | None = None) -> None:
        """``records`` more applied; ``seconds``: a partition's restore is complete."""
        if records:
            self._restored.inc(records)
        if seconds is not None:
            self._restore_seconds.observe(seconds)

    def unreadable(self, count: int) -> None:
        self._unreadable.set(count)

    def strays(self, count: int) -> None:
        self._strays.set(count)

    def rebalanced(self, change: str, partitions: int) -> None:
        if partitions:
            self._rebalances.labels(change).inc(partitions)

    def fenced(self) -> None:
        self._fenced.inc()

    def transaction(self, outcome: str) -> None:
        self._transactions.labels(outcome).inc()
