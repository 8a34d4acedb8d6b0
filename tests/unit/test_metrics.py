"""Each intent-named Metrics method moves the series it is documented to move."""

from __future__ import annotations

import inspect
import logging
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from notifier.core.circuit import CircuitState
from notifier.metrics import Metrics
from notifier.metrics_base import AGE_BUCKETS, BulkHistogram


def exercise_every_method(m: Metrics) -> None:
    """Call every intent-named method once, so every series the program can export exists."""
    m.upstream_request("main", "sync", "ok", 0.3)
    m.rate_limited("main", 30.0)
    m.budget_acquired("main", "status", 0.5)
    m.budget_configured("main", 120)
    m.token_refresh("main", "invalid_grant")
    m.on_refresh("main", "ok")
    m.client_observer("main").on_request("search", "ok", 0.1)
    m.upstream_series("main", "sync", "ok")  # what the observer keeps
    m.budget_series("main", "status")
    m.streams_tracked(3)
    m.status_checked("main", 3)
    m.cycle_completed("main", 2.0, 3)
    m.effective_interval("main", 30.0)
    m.staleness("busy", [1.0, 2.0])
    m.staleness("quiet", [100.0])
    m.stalest_check_age(100.0)
    m.subscription_check_ages({"project-a": 100.0})
    m.quarantined(1)
    m.stream_quarantined("bad_token")
    m.page_synced("main", overwrite=True, relationships=2, size_bytes=2048)
    m.events_detected("created", snapshot=True, n=2)
    m.detection_lag(12.0)
    m.checkpoint_committed()
    m.events_published("events", "ok", 2)
    m.publish_latency("events", 0.01)
    m.sink_up("events", up=True)
    m.kafka_internals_missing("events", missing=False)
    m.outbox_state("hooks", pending=1, oldest_age_seconds=5.0, dead=0)
    m.outbox_limit("hooks", 1000)
    m.webhook_delivery("hooks", "ok", 0.2)
    m.circuit_state("hooks", "closed")
    m.dead_lettered("hooks", 1)
    m.build_info("0.0.0-test", "3.11.0")
    m.loop_lag(0.001)
    m.hubs.configured("all-projects")
    m.hubs.discovered("all-projects", listed=3, watched=2, added=2, retired=0, at=1.0)
    m.hubs.discovery_failed("all-projects", "forbidden", 1)
    m.store.failed("busy")
    m.store.works()


def test_exercise_every_method_covers_the_public_api() -> None:
    public = {
        name
        for name in vars(Metrics)
        if not name.startswith("_") and callable(getattr(Metrics, name)) and name != "render"
    }
    source = inspect.getsource(exercise_every_method)
    assert {name for name in public if f"m.{name}(" not in source} == set()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_default_registry_is_private_and_runtime_collectors_are_optional() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    a.checkpoint_committed()
    assert value(a, "notifier_sync_checkpoints_total") == 1
    assert value(b, "notifier_sync_checkpoints_total") == 0
    names = {f.name for f in Metrics().registry.collect()}
    assert "process_cpu_seconds" in names
    assert "process_cpu_seconds" not in {
        f.name for f in Metrics(CollectorRegistry(), runtime=False).registry.collect()
    }


def test_upstream_request_counts_by_outcome_and_times(metrics: Metrics) -> None:
    metrics.upstream_request("main", "sync", "ok", 0.2)
    metrics.upstream_request("main", "sync", "ok", 3.0)
    metrics.upstream_request("main", "syncStatus", "server_error", 0.1)
    labels = {"credential": "main", "endpoint": "sync"}
    assert value(metrics, "notifier_upstream_requests_total", **labels, outcome="ok") == 2
    assert (
        value(
            metrics,
            "notifier_upstream_requests_total",
            credential="main",
            endpoint="syncStatus",
            outcome="server_error",
        )
        == 1
    )
    assert value(metrics, "notifier_upstream_request_duration_seconds_count", **labels) == 2
    assert value(metrics, "notifier_upstream_request_duration_seconds_sum", **labels) == 3.2
    assert (
        value(metrics, "notifier_upstream_request_duration_seconds_bucket", **labels, le="0.25")
        == 1
    )


def test_unknown_outcome_is_bounded_to_other(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="notifier.metrics"):
        metrics.upstream_request("main", "sync", "https://evil.example/?token=x", 1.0)
        metrics.upstream_request("main", "sync", "https://evil.example/?token=x", 1.0)
    labels = {"credential": "main", "endpoint": "sync"}
    assert value(metrics, "notifier_upstream_requests_total", **labels, outcome="other") == 2
    assert len([r for r in caplog.records if "unexpected" in r.getMessage()]) == 1


def test_rate_limited_counts_429s_and_seconds_waited(metrics: Metrics) -> None:
    metrics.rate_limited("main", 30.0)
    metrics.rate_limited("main", 12.5)
    assert value(metrics, "notifier_upstream_rate_limited_total", credential="main") == 2
    assert value(metrics, "notifier_upstream_retry_after_seconds_total", credential="main") == 42.5


def test_budget(metrics: Metrics) -> None:
    metrics.budget_configured("main", 120)
    metrics.budget_acquired("main", "status", 0.0)
    metrics.budget_acquired("main", "status", 2.0)
    metrics.budget_acquired("main", "sync", 0.5)
    assert value(metrics, "notifier_budget_limit_requests_per_second", credential="main") == 2.0
    status = {"credential": "main", "priority": "status"}
    assert value(metrics, "notifier_budget_acquired_total", **status) == 2
    assert value(metrics, "notifier_budget_wait_seconds_sum", **status) == 2.0
    assert value(metrics, "notifier_budget_acquired_total", credential="main", priority="sync") == 1


def test_token_refresh_counts_outcomes_and_tracks_consecutive_failures(metrics: Metrics) -> None:
    metrics.budget_configured("other", 60)
    # a credential's failure series exist at 0 before the first failure, so increase() sees it
    assert (
        value(
            metrics,
            "notifier_auth_token_refreshes_total",
            credential="other",
            outcome="invalid_grant",
        )
        == 0
    )
    metrics.token_refresh("main", "error")
    metrics.token_refresh("main", "invalid_grant")
    consecutive = "notifier_auth_refresh_consecutive_failures"
    assert value(metrics, consecutive, credential="main") == 2
    metrics.token_refresh("main", "ok")
    assert value(metrics, consecutive, credential="main") == 0
    for outcome in ("ok", "error", "invalid_grant"):
        assert (
            value(
                metrics, "notifier_auth_token_refreshes_total", credential="main", outcome=outcome
            )
            == 1
        )



def test_subscription_check_ages_follow_the_configured_subscriptions(metrics: Metrics) -> None:
    name = "notifier_scheduler_subscription_check_age_seconds"
    metrics.subscription_check_ages({"a": 12.0, "b": 300.0})
    assert value(metrics, name, subscription="a") == 12.0
    assert value(metrics, name, subscription="b") == 300.0
    metrics.subscription_check_ages({"b": 5.0})  # a is gone (removed or all quarantined)
    assert metrics.registry.get_sample_value(name, {"subscription": "a"}) is None
    assert value(metrics, name, subscription="b") == 5.0


def test_credential_up_stays_down_until_a_refresh_succeeds(metrics: Metrics) -> None:
    up = "notifier_auth_credential_up"
    assert metrics.registry.get_sample_value(up, {"credential": "main"}) is None  # unknown yet
    metrics.token_refresh("main", "ok")
    assert value(metrics, up, credential="main") == 1
    metrics.token_refresh("main", "unavailable")  # transient: says nothing about the token
    assert value(metrics, up, credential="main") == 1
    metrics.token_refresh("main", "invalid_grant")
    assert value(metrics, up, credential="main") == 0
    metrics.token_refresh("main", "unavailable")
    assert value(metrics, up, credential="main") == 0  # still dead: nothing recovered
    metrics.token_refresh("main", "ok")  # re-seeded
    assert value(metrics, up, credential="main") == 1
    metrics.token_refresh("other", "rejected")  # client id/secret rejected: dead too
    assert value(metrics, up, credential="other") == 0

def test_scheduling(metrics: Metrics) -> None:
    metrics.streams_tracked(40)
    metrics.status_checked("main", 25)
    metrics.status_checked("main", 15)
    metrics.cycle_completed("main", 12.0, 40)
    metrics.effective_interval("main", 45.0)
    metrics.stalest_check_age(90.0)
    assert value(metrics, "notifier_scheduler_streams_tracked") == 40
    assert value(metrics, "notifier_scheduler_status_calls_total", credential="main") == 2
    assert value(metrics, "notifier_scheduler_status_tokens_total", credential="main") == 40
    assert value(metrics, "notifier_scheduler_cycles_total", credential="main") == 1
    assert value(metrics, "notifier_scheduler_cycle_duration_seconds_sum", credential="main") == 12
    assert value(metrics, "notifier_scheduler_streams_checked_total", credential="main") == 40
    assert value(metrics, "notifier_scheduler_effective_interval_seconds", credential="main") == 45
    assert value(metrics, "notifier_scheduler_stalest_check_age_seconds") == 90


def test_staleness_sets_max_and_observes_each_age(metrics: Metrics) -> None:
    metrics.staleness("busy", [3.0, 70.0, 20.0])
    metrics.staleness("quiet", iter([400.0]))
    assert value(metrics, "notifier_scheduler_check_age_max_seconds", **{"class": "busy"}) == 70
    assert value(metrics, "notifier_scheduler_check_age_max_seconds", **{"class": "quiet"}) == 400
    busy = {"class": "busy"}
    assert value(metrics, "notifier_scheduler_check_age_seconds_count", **busy) == 3
    assert value(metrics, "notifier_scheduler_check_age_seconds_bucket", **busy, le="30.0") == 2
    # a class with no streams left reports 0, not its old maximum
    metrics.staleness("busy", [])
    assert value(metrics, "notifier_scheduler_check_age_max_seconds", **busy) == 0


def test_quarantine(metrics: Metrics) -> None:
    metrics.quarantined(2)
    metrics.stream_quarantined("bad_token")
    metrics.stream_quarantined("bad_token")
    metrics.stream_quarantined("gone")
    assert value(metrics, "notifier_scheduler_quarantined_streams") == 2
    assert value(metrics, "notifier_scheduler_quarantines_total", reason="bad_token") == 2
    assert value(metrics, "notifier_scheduler_quarantines_total", reason="gone") == 1


def test_sync(metrics: Metrics) -> None:
    metrics.page_synced("main", overwrite=False, relationships=100, size_bytes=50_000)
    metrics.page_synced("main", overwrite=True, relationships=3, size_bytes=900)
    metrics.events_detected("created", snapshot=False, n=5)
    metrics.events_detected("deleted", snapshot=True, n=2)
    metrics.detection_lag(40.0)
    metrics.detection_lag(-3.0)  # clock skew: counted as 0, never crashes
    metrics.checkpoint_committed()
    metrics.checkpoint_committed(3)
    assert value(metrics, "notifier_sync_pages_total", credential="main", overwrite="true") == 1
    assert value(metrics, "notifier_sync_pages_total", credential="main", overwrite="false") == 1
    assert value(metrics, "notifier_sync_relationships_total", credential="main") == 103
    assert value(metrics, "notifier_sync_page_size_bytes_sum", credential="main") == 50_900
    assert (
        value(metrics, "notifier_sync_events_detected_total", kind="created", snapshot="false") == 5
    )
    assert (
        value(metrics, "notifier_sync_events_detected_total", kind="deleted", snapshot="true") == 2
    )
    assert value(metrics, "notifier_sync_detection_lag_seconds_count") == 2
    assert value(metrics, "notifier_sync_detection_lag_seconds_bucket", le="1.0") == 1
    assert value(metrics, "notifier_sync_detection_lag_seconds_bucket", le="60.0") == 2
    assert value(metrics, "notifier_sync_checkpoints_total") == 4


def test_detection_lag_buckets_span_seconds_to_hours(metrics: Metrics) -> None:
    metrics.detection_lag(5 * 3600)
    assert value(metrics, "notifier_sync_detection_lag_seconds_bucket", le="1.0") == 0
    assert value(metrics, "notifier_sync_detection_lag_seconds_bucket", le="14400.0") == 0
    assert value(metrics, "notifier_sync_detection_lag_seconds_bucket", le="28800.0") == 1


def test_sinks(metrics: Metrics) -> None:
    metrics.sink_up("events", up=True)
    assert (
        value(metrics, "notifier_sink_events_published_total", sink="events", outcome="error") == 0
    )
    metrics.events_published("events", "ok", 10)
    metrics.events_published("events", "error", 3)
    metrics.publish_latency("events", 0.02)
    metrics.sink_up("hooks", up=False)
    assert value(metrics, "notifier_sink_events_published_total", sink="events", outcome="ok") == 10
    assert (
        value(metrics, "notifier_sink_events_published_total", sink="events", outcome="error") == 3
    )
    assert value(metrics, "notifier_sink_publish_duration_seconds_count", sink="events") == 1
    assert value(metrics, "notifier_sink_up", sink="events") == 1
    assert value(metrics, "notifier_sink_up", sink="hooks") == 0


def test_outbox_and_webhooks(metrics: Metrics) -> None:
    metrics.outbox_state("hooks", pending=7, oldest_age_seconds=120.0, dead=1)
    metrics.webhook_delivery("hooks", "ok", 0.3)
    metrics.webhook_delivery("hooks", "retry", 5.0)
    metrics.dead_lettered("hooks", 2)
    assert value(metrics, "notifier_outbox_pending_events", sink="hooks") == 7
    assert value(metrics, "notifier_outbox_oldest_age_seconds", sink="hooks") == 120
    assert value(metrics, "notifier_outbox_dead_events", sink="hooks") == 1
    assert value(metrics, "notifier_outbox_dead_lettered_total", sink="hooks") == 2
    assert value(metrics, "notifier_webhook_deliveries_total", sink="hooks", outcome="ok") == 1
    assert value(metrics, "notifier_webhook_deliveries_total", sink="hooks", outcome="retry") == 1
    assert value(metrics, "notifier_webhook_delivery_duration_seconds_sum", sink="hooks") == 5.3
    metrics.outbox_state("hooks", pending=0, oldest_age_seconds=0.0, dead=1)
    assert value(metrics, "notifier_outbox_pending_events", sink="hooks") == 0
    metrics.outbox_limit("hooks", 5000)
    assert value(metrics, "notifier_outbox_pending_limit_events", sink="hooks") == 5000


def test_circuit_state_is_one_hot_and_accepts_the_enum(metrics: Metrics) -> None:
    metrics.circuit_state("hooks", "closed")
    metrics.circuit_state("hooks", CircuitState.OPEN)
    states = {
        s: value(metrics, "notifier_webhook_circuit_state", sink="hooks", state=s)
        for s in ("closed", "open", "half_open")
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0}


def test_build_info_and_loop_lag(metrics: Metrics) -> None:
    metrics.build_info("1.2.3", "3.11.7")
    metrics.loop_lag(0.25)
    assert value(metrics, "notifier_build_info", version="1.2.3", python="3.11.7") == 1
    assert value(metrics, "notifier_event_loop_lag_seconds") == 0.25


def test_render_text_and_openmetrics(metrics: Metrics) -> None:
    metrics.checkpoint_committed()
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"notifier_sync_checkpoints_total 1.0" in body
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_observer_hooks_of_the_upstream_client_and_auth(metrics: Metrics) -> None:
    observer = metrics.client_observer("main")
    observer.on_request("syncStatus", "transport_error", 10.0)
    observer.on_rate_limited(7.0)
    metrics.on_refresh("main", "unavailable")
    metrics.on_refresh("main", "store_failed")
    labels = {"credential": "main", "endpoint": "syncStatus", "outcome": "transport_error"}
    assert value(metrics, "notifier_upstream_requests_total", **labels) == 1
    assert value(metrics, "notifier_upstream_retry_after_seconds_total", credential="main") == 7
    refreshes = "notifier_auth_token_refreshes_total"
    assert value(metrics, refreshes, credential="main", outcome="unavailable") == 1
    assert value(metrics, refreshes, credential="main", outcome="store_failed") == 1
    assert value(metrics, "notifier_auth_refresh_consecutive_failures", credential="main") == 2


def test_the_client_observer_counts_each_request_and_slot_as_the_metrics_methods_do(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """The observer keeps the series it updates: repeated calls still count each one, an
    unknown outcome still goes to "other" (warned once), negative times count as 0."""
    observer = metrics.client_observer("main")
    with caplog.at_level(logging.WARNING, logger="notifier.metrics"):
        for seconds in (0.1, 0.2, -1.0):
            observer.on_request("syncStatus", "ok", seconds)
            observer.on_request("sync", "weird", 1.0)
            observer.on_budget("status", seconds)
    metrics.upstream_request("main", "syncStatus", "ok", 0.3)  # the same series
    status = {"credential": "main", "endpoint": "syncStatus"}
    assert value(metrics, "notifier_upstream_requests_total", **status, outcome="ok") == 4
    assert value(metrics, "notifier_upstream_request_duration_seconds_count", **status) == 4
    assert value(metrics, "notifier_upstream_request_duration_seconds_sum", **status) == (
        pytest.approx(0.6))
    assert value(metrics, "notifier_upstream_requests_total", credential="main",
                 endpoint="sync", outcome="other") == 3
    assert len([r for r in caplog.records if "unexpected" in r.getMessage()]) == 1
    budget = {"credential": "main", "priority": "status"}
    assert value(metrics, "notifier_budget_acquired_total", **budget) == 3
    assert value(metrics, "notifier_budget_wait_seconds_sum", **budget) == pytest.approx(0.3)
    # The credential's alerting series exist (created at zero by the first call).
    assert value(metrics, "notifier_upstream_rate_limited_total", credential="main") == 0


def test_hub_discovery_metrics() -> None:
    m = Metrics(CollectorRegistry(), runtime=False)
    m.hubs.configured("hub-a")

    def get(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, {"subscription": "hub-a", **labels})

    assert get("notifier_hub_discoveries_total", outcome="forbidden") == 0
    m.hubs.discovered("hub-a", listed=5, watched=3, added=3, retired=0, at=100.0)
    m.hubs.discovery_failed("hub-a", "forbidden", 1)
    m.hubs.discovery_failed("hub-a", "nonsense", 2)
    assert get("notifier_hub_projects") == 3
    assert get("notifier_hub_projects_listed") == 5
    assert get("notifier_hub_projects_added_total") == 3
    assert get("notifier_hub_last_discovery_timestamp_seconds") == 100.0
    assert get("notifier_hub_discoveries_total", outcome="forbidden") == 1
    assert get("notifier_hub_discoveries_total", outcome="error") == 1
    assert get("notifier_hub_discovery_consecutive_failures") == 2
    m.hubs.discovered("hub-a", listed=4, watched=2, added=0, retired=1, at=200.0)
    assert get("notifier_hub_discovery_consecutive_failures") == 0
    assert get("notifier_hub_projects_retired_total") == 1


def test_state_store_metrics(metrics: Metrics) -> None:
    assert value(metrics, "notifier_state_store_up") == 1
    assert value(metrics, "notifier_state_store_errors_total", kind="busy") == 0  # up front
    metrics.store.failed("full")
    metrics.store.failed("io")
    metrics.store.failed("no such kind")
    assert value(metrics, "notifier_state_store_up") == 0
    assert value(metrics, "notifier_state_store_errors_total", kind="full") == 1
    assert value(metrics, "notifier_state_store_errors_total", kind="io") == 1
    assert value(metrics, "notifier_state_store_errors_total", kind="other") == 1
    metrics.store.works()
    assert value(metrics, "notifier_state_store_up") == 1


def test_bulk_histogram_exposes_what_a_histogram_observing_each_value_would() -> None:
    rng = random.Random(5)
    samples = [[rng.choice([0.0, 1.0, 5.0, rng.uniform(0, 100_000)]) for _ in range(200)]
               for _ in range(3)] + [[]]
    bulk_reg, plain_reg = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "doc", AGE_BUCKETS, "class", bulk_reg)
    plain = Histogram("x_seconds", "doc", ["class"], buckets=AGE_BUCKETS, registry=plain_reg)
    for i, values in enumerate(samples):
        bulk.observe_all(f"c{i % 2}", values)
        for v in values:
            plain.labels(f"c{i % 2}").observe(v)

    def exposed(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for m in reg.collect() for s in m.samples if not s.name.endswith("_created")}
    got, want = exposed(bulk_reg), exposed(plain_reg)
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)
    assert bulk_reg.get_sample_value("x_seconds_created", {"class": "c0"}) is not None


def test_gauges_refreshed_at_collect_are_read_in_the_same_scrape(caplog) -> None:
    m = Metrics(CollectorRegistry(), runtime=False)
    ages = iter([40.0, 7.0])
    m.refresh_at_collect(lambda: m.stalest_check_age(next(ages)))
    scrape = m.render()[0].decode()
    assert "notifier_scheduler_stalest_check_age_seconds 40.0" in scrape
    assert m.registry.get_sample_value("notifier_scheduler_stalest_check_age_seconds") == 7.0
    # A failing refresh is logged; the scrape goes on with the values as they were.
    m.refresh_at_collect(lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="notifier.metrics"):
        assert m.registry.get_sample_value("notifier_scheduler_stalest_check_age_seconds") == 7.0
    assert "refreshing metrics at a scrape failed" in caplog.text
    m.refresh_at_collect(None)
    assert "notifier_scheduler_stalest_check_age_seconds 7.0" in m.render()[0].decode()
