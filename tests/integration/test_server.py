"""MetricsServer over real HTTP: probes follow HealthState, scrapes follow Metrics."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from notifier.config import split_host_port
from notifier.metrics import Metrics
from notifier.server import HealthState, MetricsServer
from tests.unit.test_metrics import exercise_every_method


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def health() -> HealthState:
    return HealthState()


@pytest.fixture
async def server(metrics: Metrics, health: HealthState) -> AsyncIterator[MetricsServer]:
    async with MetricsServer(metrics, "127.0.0.1:0", health) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def scrape(http: aiohttp.ClientSession, server: MetricsServer) -> dict[str, float]:
    """Every sample of a real scrape as ``name{k="v",...}`` (labels sorted) -> value."""
    status, _, text = await get(http, f"{server.url}/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


async def test_binds_a_free_port_and_releases_it(
    metrics: Metrics, health: HealthState, http: aiohttp.ClientSession
) -> None:
    async with MetricsServer(metrics, "127.0.0.1:0", health) as srv:
        assert srv.port > 0
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        port = srv.port
        assert (await get(http, f"http://127.0.0.1:{port}/healthz"))[0] == 200
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass


async def test_port_in_use_fails_to_start(metrics: Metrics, health: HealthState) -> None:
    async with MetricsServer(metrics, "127.0.0.1:0", health) as first:
        with pytest.raises(OSError, match="in use"):
            async with MetricsServer(metrics, f"127.0.0.1:{first.port}", health):
                pass


async def test_healthz_answers_while_the_loop_runs(
    server: MetricsServer, http: aiohttp.ClientSession
) -> None:
    status, content_type, body = await get(http, f"{server.url}/healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert '"status":"ok"' in body


async def test_readyz_follows_health_conditions(
    metrics: Metrics, health: HealthState, http: aiohttp.ClientSession
) -> None:
    """Ready = config loaded, store open, sinks set up, loop on time, not shutting down.

    Changed on purpose (issue 17): readiness no longer waits for a first polling pass nor follows
    sink health; those are upstream and sink matters for metrics and alerts.
    """
    # The watchdog never ticks during the test: the loop lag is what the test reports.
    async with MetricsServer(metrics, "127.0.0.1:0", health, watchdog_interval=3600) as server:
        await _readyz_conditions(server, health, http)


async def _readyz_conditions(
    server: MetricsServer, health: HealthState, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/readyz"
    async with http.get(url) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["ready"] is False
    assert set(body["not_ready"]) == {"config", "store", "sinks"}

    health.config_loaded()
    health.set("store", True)
    async with http.get(url) as resp:
        assert resp.status == 503
        assert set((await resp.json())["not_ready"]) == {"sinks"}

    health.sinks_started()
    status, _, _ = await get(http, url)
    assert status == 200

    health.loop_beat(server.max_loop_lag + 1.0)  # the watchdog saw the loop run late
    async with http.get(url) as resp:
        assert resp.status == 503
        assert set((await resp.json())["not_ready"]) == {"event_loop"}
    health.loop_beat(0.0)
    assert (await get(http, url))[0] == 200

    store_ok = [True]
    health.add_check("store", lambda: store_ok[0])
    assert (await get(http, url))[0] == 200
    store_ok[0] = False
    assert (await get(http, url))[0] == 503

    store_ok[0] = True
    health.shutting_down()
    async with http.get(url) as resp:
        assert resp.status == 503
        assert (await resp.json())["not_ready"] == {"shutdown": "shutting down"}


async def test_metrics_values_move_between_scrapes(
    server: MetricsServer, metrics: Metrics, http: aiohttp.ClientSession
) -> None:
    status, content_type, body = await get(http, f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "process_resident_memory_bytes" in body

    metrics.events_published("events", "ok", 3)
    metrics.stalest_check_age(42.0)
    before = await scrape(http, server)
    key = 'notifier_sink_events_published_total{outcome="ok",sink="events"}'
    assert before[key] == 3
    assert before['notifier_sink_events_published_total{outcome="error",sink="events"}'] == 0
    assert before["notifier_scheduler_stalest_check_age_seconds"] == 42

    metrics.events_published("events", "ok", 2)
    metrics.detection_lag(90.0)
    metrics.stalest_check_age(5.0)
    after = await scrape(http, server)
    assert after[key] == 5
    assert after["notifier_sync_detection_lag_seconds_count"] == 1
    assert after['notifier_sync_detection_lag_seconds_bucket{le="60.0"}'] == 0
    assert after['notifier_sync_detection_lag_seconds_bucket{le="120.0"}'] == 1
    assert after["notifier_scheduler_stalest_check_age_seconds"] == 5


async def test_openmetrics_is_served_when_asked(
    server: MetricsServer, metrics: Metrics, http: aiohttp.ClientSession
) -> None:
    metrics.checkpoint_committed()
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(f"{server.url}/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await resp.text()
    assert "notifier_sync_checkpoints_total 1.0" in text
    assert text.endswith("# EOF\n")


async def test_healthz_reports_a_stalled_loop_then_recovers(
    metrics: Metrics, health: HealthState, http: aiohttp.ClientSession
) -> None:
    async with MetricsServer(
        metrics, "127.0.0.1:0", health, max_loop_lag=0.3, watchdog_interval=0.5
    ) as srv:
        await asyncio.sleep(0.1)  # the watchdog is now inside its sleep
        # a blocking callback: the loop can run nothing else for a second
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # the watchdog wakes first: its timer is long overdue
        assert health.loop_lag_seconds > 0.3
        lag = metrics.registry.get_sample_value("notifier_event_loop_lag_seconds")
        assert lag is not None
        assert lag > 0.3
        status, _, body = await get(http, f"{srv.url}/healthz")
        assert status == 503
        assert '"status":"stalled"' in body

        deadline = asyncio.get_running_loop().time() + 10
        while (await get(http, f"{srv.url}/healthz"))[0] != 200:
            assert asyncio.get_running_loop().time() < deadline, "healthz never recovered"
            await asyncio.sleep(0.1)


@pytest.mark.skipif(shutil.which("promtool") is None and os.environ.get("CI") != "true",
                    reason="promtool not installed (CI installs it and does not skip)")
async def test_promtool_accepts_a_real_scrape(
    server: MetricsServer, metrics: Metrics, http: aiohttp.ClientSession
) -> None:
    exercise_every_method(metrics)
    status, _, body = await get(http, f"{server.url}/metrics")
    assert status == 200
    assert "notifier_build_info" in body
    proc = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(body.encode()), timeout=60)
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == ""


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert split_host_port(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "host:", "host:http", "host:70000", "", ":9464"])
def test_listen_addresses_rejected(listen: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(listen)}$"):
        split_host_port(listen)


def test_health_state_logic_without_a_server() -> None:
    health = HealthState(required=["store"])
    assert not health.ready
    health.store_open()
    assert health.ready

    def broken() -> bool:
        raise RuntimeError("boom")

    health.add_check("sink:x", broken)
    assert health.not_ready() == {"sink:x": "check failed: RuntimeError"}

    fresh = HealthState()
    assert not fresh.loop_stalled(5.0)  # no watchdog yet: the handler answering is the proof
    fresh.loop_beat(0.01, now=100.0)
    assert not fresh.loop_stalled(5.0, now=101.0)
    assert fresh.loop_stalled(5.0, now=111.0)  # the watchdog stopped beating
    fresh.loop_beat(6.0, now=112.0)
    assert fresh.loop_stalled(5.0, now=112.0)
