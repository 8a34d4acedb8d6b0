"""Scrape /metrics, /healthz and /readyz of a running notifier while changes flow."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator import Simulator
from tests.integration.main_job_support import base_config, sim_config, wait_for

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, dict]:
    async with session.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return text, samples(text)


@pytest.mark.timeout(60)
async def test_metrics_move_as_events_flow(tmp_path: Path) -> None:
    subs = [{"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
            {"name": "all-b", "credential": "sim", "container_id": B, "sinks": ["archive"]}]
    async with Simulator(sim_config([A, B], relationships=7)) as sim:
        data = base_config(tmp_path, sim.url, subs,
                           metrics={"enabled": True, "listen": "127.0.0.1:0"})
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            await wait_for(lambda: app.server is not None and app.server.port != 0, 10,
                           "the metrics server")
            assert app.server is not None
            url = app.server.url
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/healthz") as resp:
                    assert resp.status == 200
                await wait_for(app.ready.wait, 15, "the first cycle")

                async def ready() -> bool:
                    async with session.get(url + "/readyz") as resp:
                        return resp.status == 200

                await wait_for(ready, 10, "/readyz to turn 200")
                _, first = await scrape(session, url)
                # The bootstrap: 7 relationships per container, as snapshot events.
                assert value(first, "notifier_sink_events_published_total",
                             sink="archive", outcome="ok") == 14
                assert value(first, "notifier_sync_events_detected_total",
                             kind="created", snapshot="true") == 14
                assert value(first, "notifier_upstream_requests_total", credential="sim",
                             endpoint="sync", outcome="ok") >= 2

                sim.state.create_relationships(A, 3)
                sim.state.delete_relationships(B, list(sim.state.ground_truth(B)["live"])[:2])

                async def moved() -> bool:
                    _, now = await scrape(session, url)
                    return value(now, "notifier_sink_events_published_total",
                                 sink="archive", outcome="ok") == 19

                await wait_for(moved, 15, "the new changes to be published")
                text, after = await scrape(session, url)
                assert value(after, "notifier_sync_events_detected_total",
                             kind="created", snapshot="false") == 3
                assert value(after, "notifier_sync_events_detected_total",
                             kind="deleted", snapshot="false") == 2
                assert value(after, "notifier_sync_detection_lag_seconds_count") == 5
                assert value(after, "notifier_sync_checkpoints_total") > value(
                    first, "notifier_sync_checkpoints_total")
                assert value(after, "notifier_scheduler_status_tokens_total",
                             credential="sim") > value(
                    first, "notifier_scheduler_status_tokens_total", credential="sim")
                assert value(after, "notifier_sink_up", sink="archive") == 1
                # Every request took its slot from the budget: status checks and sync pages.
                for priority in ("status", "sync"):
                    assert value(after, "notifier_budget_wait_seconds_count", credential="sim",
                                 priority=priority) > 0
                assert app.health.ready
        finally:
            app.request_stop()
            # Draining: no longer ready, so the pod leaves the Service's endpoints.
            assert app.health.not_ready() == {"shutdown": "shutting down"}
            assert await asyncio.wait_for(task, 10) == 0

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (scripts/install-tools.sh installs it)")
        pytest.skip("promtool is not installed")
    check = subprocess.run(  # noqa: ASYNC221 - the loop has nothing else to do by now
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


async def start_app(data: dict) -> tuple[App, asyncio.Task[int], str]:
    """An App running in this loop with its metrics server up: (app, its task, server URL)."""
    app = App(config_from_data(data))
    task = asyncio.create_task(app.run())
    try:
        await wait_for(lambda: app.server is not None and app.server.port != 0, 10,
                       "the metrics server")
    except BaseException:
        app.request_stop()
        await asyncio.wait_for(task, 10)
        raise
    assert app.server is not None
    return app, task, app.server.url


@pytest.mark.timeout(60)
async def test_ready_with_a_wrong_container_and_a_dead_receiver(tmp_path: Path) -> None:
    """/readyz is about the process: a subscription whose container does not exist and a
    webhook receiver that refuses connections show in metrics, not in readiness (issue 17)."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    unknown = "00000000-0000-4000-8000-000000000000"
    subs = [{"name": "good", "credential": "sim", "container_id": A, "sinks": ["hooks"]},
            {"name": "wrong", "credential": "sim", "container_id": unknown, "sinks": ["hooks"]}]
    hooks = {"name": "hooks", "type": "webhook", "url": f"http://127.0.0.1:{dead_port}/h",
             "allow_insecure_http": True, "retry_schedule": ["100ms"],
             "secret": "whsec_" + base64.b64encode(b"k" * 32).decode(),
             "circuit_breaker": {"failure_threshold": 1, "reset_after": "300ms"}}
    async with Simulator(sim_config([A], relationships=3)) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[hooks],
                           metrics={"enabled": True, "listen": "127.0.0.1:0"})
        app, task, url = await start_app(data)
        try:
            async with aiohttp.ClientSession() as session:

                async def sink_down_and_stream_failing() -> bool:
                    _, now = await scrape(session, url)
                    return (value(now, "notifier_sink_up", sink="hooks") == 0
                            and value(now, "notifier_scheduler_quarantined_streams") >= 1)

                await wait_for(sink_down_and_stream_failing, 30,
                               "the sink down and the wrong container quarantined")
                async with session.get(url + "/readyz") as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json()) == {"ready": True}
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
