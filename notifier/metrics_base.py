"""The base of ``Metrics``: the registry, collector factories, bounded label values.

Names follow ``notifier_<subsystem>_<what>_<unit>`` in base units; counters end in ``_total``.
Label values are bounded: closed sets (outcome, kind, reason, class, state) are checked by
``_bounded``, anything unexpected is counted as ``other``.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from notifier.metrics_tally import CounterTally, HistogramTally, Tally

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


M = TypeVar("M", Counter, Gauge, Histogram)
_T = TypeVar("_T", CounterTally, HistogramTally)


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
        # First in the registry, so what it sets is read in the same scrape.
        self._at_collect = AtCollect()
        self.registry.register(self._at_collect)
        if runtime:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._warned: set[tuple[str, str]] = set()
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        self._tallies: dict[tuple[int, tuple[str, ...]], Tally] = {}
        self._at_collect.tallies = self._tallies

    def refresh_at_collect(self, refresh: Callable[[], None] | None) -> None:
        """Run ``refresh`` at every read of the registry (a scrape), before any value is read:
        for gauges that cost a walk over every stream, computed only when someone looks."""
        self._at_collect.refresh = refresh

    def _labelled(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, looked up once per label set: a request's metrics are
        updated for every container check, and ``labels()`` validates its input each time.
        Only for metrics whose series are never removed (label values bounded)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]

    def _counter_tally(self, metric: Counter, *values: str) -> CounterTally:
        """The series ``metric.labels(*values)`` counted in plain Python and handed to
        Prometheus at each scrape (notifier.metrics_tally): for the series every container
        check updates. Once a series has a tally, only the tally may update it."""
        return self._tally(CounterTally, metric, values)

    def _histogram_tally(self, metric: Histogram, *values: str) -> HistogramTally:
        """As ``_counter_tally``, for a histogram series."""
        return self._tally(HistogramTally, metric, values)

    def _tally(self, kind: type[_T], metric: Counter | Histogram, values: tuple[str, ...]
               ) -> _T:
        key = (id(metric), values)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = kind(metric.labels(*values))  # type: ignore[arg-type]
        assert isinstance(tally, kind)
        return tally

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


class GaugeSnapshot:
    """A gauge with one label whose series are replaced all at once (``set_all``) and read at
    scrape time: one series per key of the last mapping given, others gone. For a series per
    subscription, 100,000 of them, where a ``Gauge`` would take a label look-up per series at
    every update."""

    def __init__(self, name: str, doc: str, label: str, registry: CollectorRegistry) -> None:
        self._name, self._doc, self._label = name, doc, label
        self._values: Mapping[str, float] = {}
        registry.register(self)

    def set_all(self, values: Mapping[str, float]) -> None:
        """The new series (the mapping is kept as given: do not change it afterwards)."""
        self._values = values

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self._name, self._doc, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._doc, labels=[self._label])
        for key, value in self._values.items():
            family.add_metric([key], nonneg(value))
        yield family


class AtCollect:
    """A collector without series of its own: when the registry is read, it hands the
    tallies' totals to their series (notifier.metrics_tally) and runs ``refresh``."""

    def __init__(self) -> None:
        self.refresh: Callable[[], None] | None = None
        self.tallies: Mapping[tuple[int, tuple[str, ...]], Tally] = {}

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for tally in list(self.tallies.values()):
            tally.flush()
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception:  # a metrics bug must never fail a scrape
                log.exception("refreshing metrics at a scrape failed")
        return iter(())


class BulkHistogram:
    """A histogram with one label, fed a whole sample at once (``observe_all``): the values are
    sorted once and each bucket counted by bisection, instead of one ``observe()`` per value.
    Exposed like a ``Histogram`` (buckets, count, sum and the series' creation time)."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float], label: str,
                 registry: CollectorRegistry) -> None:
        self._name, self._doc, self._label = name, doc, label
        self._bounds = tuple(float(b) for b in buckets)
        self._counts: dict[str, list[int]] = {}  # cumulative per bound, then the total
        self._sums: dict[str, float] = {}
        self._created: dict[str, float] = {}
        registry.register(self)

    def observe_all(self, label: str, values: Iterable[float]) -> None:
        ordered = sorted(values)
        if label not in self._counts:
            self._counts[label] = [0] * (len(self._bounds) + 1)
            self._sums[label] = 0.0
            self._created[label] = time.time()
        counts = self._counts[label]
        for i, bound in enumerate(self._bounds):
            counts[i] += bisect.bisect_right(ordered, bound)  # values <= bound
        counts[-1] += len(ordered)
        self._sums[label] += sum(ordered)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._doc, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=[self._label])
        created = GaugeMetricFamily(f"{self._name}_created", self._doc, labels=[self._label])
        for label, counts in self._counts.items():
            buckets = [(floatToGoString(b), float(c))  # type: ignore[no-untyped-call]
                       for b, c in zip(self._bounds, counts, strict=False)]
            buckets.append(("+Inf", float(counts[-1])))
            family.add_metric([label], buckets, self._sums[label])
            created.add_metric([label], self._created[label])
        yield family
        yield created
