"""The series counted as tallies (notifier.metrics_tally) expose exactly what prometheus_client's
own ``inc`` and ``observe`` would have: the same series, values, buckets and sums, at every
scrape, however many scrapes come between the updates."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from notifier.metrics import Metrics
from notifier.metrics_base import REQUEST_BUCKETS, WAIT_BUCKETS, nonneg

TALLIED = ("notifier_upstream_requests", "notifier_upstream_request_duration_seconds",
           "notifier_budget_acquired", "notifier_budget_wait_seconds",
           "notifier_scheduler_status_calls", "notifier_scheduler_status_tokens")


class Reference:
    """The same series fed one ``inc``/``observe`` at a time, as before the tallies."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("notifier_upstream_requests_total", "x",
                                ("credential", "endpoint", "outcome"), registry=r)
        self.duration = Histogram("notifier_upstream_request_duration_seconds", "x",
                                  ("credential", "endpoint"), buckets=REQUEST_BUCKETS,
                                  registry=r)
        self.acquired = Counter("notifier_budget_acquired_total", "x",
                                ("credential", "priority"), registry=r)
        self.wait = Histogram("notifier_budget_wait_seconds", "x", ("credential", "priority"),
                              buckets=WAIT_BUCKETS, registry=r)
        self.calls = Counter("notifier_scheduler_status_calls_total", "x", ("credential",),
                             registry=r)
        self.tokens = Counter("notifier_scheduler_status_tokens_total", "x", ("credential",),
                              registry=r)


def exposed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the tallied families but their creation times."""
    out = {}
    for family in registry.collect():
        if family.name in TALLIED:
            for s in family.samples:
                if not s.name.endswith("_created"):
                    out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_tallies_expose_what_inc_and_observe_would_at_every_scrape() -> None:
    rng = random.Random(7)
    metrics, ref = Metrics(CollectorRegistry(), runtime=False), Reference()
    observer = metrics.client_observer("main")
    # Values on the buckets' bounds, between them, beyond the last, zero, negative, NaN, inf.
    edges = [*REQUEST_BUCKETS, *WAIT_BUCKETS, 0.0, -1.0, math.nan, math.inf, 1e-9, 1e6]
    for step in range(3000):
        seconds = rng.choice(edges) if rng.random() < 0.3 else rng.expovariate(3.0)
        endpoint = rng.choice(("syncStatus", "sync"))
        outcome = rng.choice(("ok", "ok", "ok", "server_error", "weird"))
        priority = rng.choice(("status", "sync"))
        tokens = rng.randrange(0, 30)
        if rng.random() < 0.5:
            observer.on_request(endpoint, outcome, seconds)
            observer.on_budget(priority, seconds)
        else:  # the same series, through the Metrics methods
            metrics.upstream_request("main", endpoint, outcome, seconds)
            metrics.budget_acquired("main", priority, seconds)
        metrics.status_checked("main", tokens)
        bounded = outcome if outcome != "weird" else "other"
        ref.requests.labels("main", endpoint, bounded).inc()
        ref.duration.labels("main", endpoint).observe(nonneg(seconds))
        ref.acquired.labels("main", priority).inc()
        ref.wait.labels("main", priority).observe(nonneg(seconds))
        ref.calls.labels("main").inc()
        ref.tokens.labels("main").inc(tokens)
        if step % 397 == 0:  # scrapes in between count nothing twice
            assert same(exposed(metrics.registry), exposed(ref.registry))
    got, want = exposed(metrics.registry), exposed(ref.registry)
    assert same(got, want)
    assert got[("notifier_scheduler_status_calls_total", (("credential", "main"),))] == 3000
    assert sum(v for (name, _), v in got.items()
               if name == "notifier_upstream_request_duration_seconds_count") == 3000
    # The text exposition too (its creation times aside), twice in a row.
    for _ in range(2):
        assert text_lines(metrics.registry) == text_lines(ref.registry)


def text_lines(registry: CollectorRegistry) -> list[str]:
    """The tallied families' lines of the text exposition, but their creation times."""
    family = ""
    out = []
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif family in TALLIED and not line.startswith("#") and "_created" not in line:
            out.append(line)
    assert out
    return out


def test_a_tallied_series_exists_from_its_first_use_only() -> None:
    metrics = Metrics(CollectorRegistry(), runtime=False)
    reg = metrics.registry
    labels = {"credential": "main", "endpoint": "syncStatus", "outcome": "ok"}
    assert reg.get_sample_value("notifier_upstream_requests_total", labels) is None
    observer = metrics.client_observer("main")
    observer.on_request("syncStatus", "ok", 0.02)
    assert reg.get_sample_value("notifier_upstream_requests_total", labels) == 1
    assert reg.get_sample_value("notifier_upstream_request_duration_seconds_bucket",
                                {"credential": "main", "endpoint": "syncStatus",
                                 "le": "0.05"}) == 1
    assert reg.get_sample_value("notifier_upstream_requests_total", {
        **labels, "outcome": "server_error"}) is None
    assert reg.get_sample_value("notifier_upstream_requests_created", labels) is not None
