"""Quiet container checks against the simulator: the series every check updates (counted as
tallies, handed to Prometheus at a scrape) agree with what the simulator served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from notifier.app import App
from notifier.config import config_from_data
from notifier.metrics import Metrics
from notifier.simulator import Simulator
from tests.integration.main_job_support import base_config, sim_config, wait_for

CIDS = [f"5c0d9e1f-2a3b-4c4d-8e5f-{n:012x}" for n in range(3)]


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(60)
async def test_quiet_checks_count_right_at_scrape_time(tmp_path: Path) -> None:
    subs = [{"name": f"s{n}", "credential": "sim", "container_id": c, "sinks": ["archive"]}
            for n, c in enumerate(CIDS)]
    metrics = Metrics(CollectorRegistry(), runtime=False)
    async with Simulator(sim_config(CIDS, relationships=3)) as sim:
        app = App(config_from_data(base_config(tmp_path, sim.url, subs)), metrics=metrics)
        task = asyncio.create_task(app.run())
        try:
            await wait_for(app.ready.wait, 15, "the first cycle")
            first = scraped(metrics)  # a scrape while the checks go on
            served = sim.state.stats.requests
            before = served["syncStatus"]
            await wait_for(lambda: served["syncStatus"] >= before + 20, 20, "quiet checks")
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
        stats = sim.state.stats
        after = scraped(metrics)
    calls = stats.requests["syncStatus"]
    assert calls >= 20
    assert stats.statuses.get("429", 0) == 0
    # Each container's first check is its bootstrap: counted, with no syncStatus call asked.
    assert value(after, "notifier_scheduler_status_calls_total",
                 credential="sim") == calls + len(CIDS)
    assert value(after, "notifier_scheduler_status_tokens_total",
                 credential="sim") == stats.sync_status_tokens
    assert value(after, "notifier_upstream_requests_total", credential="sim",
                 endpoint="syncStatus", outcome="ok") == calls
    assert value(after, "notifier_upstream_request_duration_seconds_count", credential="sim",
                 endpoint="syncStatus") == calls
    assert value(after, "notifier_upstream_request_duration_seconds_bucket", credential="sim",
                 endpoint="syncStatus", le="+Inf") == calls
    assert value(after, "notifier_upstream_request_duration_seconds_sum", credential="sim",
                 endpoint="syncStatus") > 0
    every = stats.requests["syncStatus"] + stats.requests["sync"]
    slots = sum(value(after, "notifier_budget_acquired_total", credential="sim", priority=p)
                for p in ("status", "sync"))
    assert slots == every
    assert sum(value(after, "notifier_budget_wait_seconds_count", credential="sim", priority=p)
               for p in ("status", "sync")) == every
    # The scrape during the run saw a part of the same totals, not more.
    seen = value(first, "notifier_upstream_requests_total", credential="sim",
                 endpoint="syncStatus", outcome="ok")
    assert seen <= before < calls
