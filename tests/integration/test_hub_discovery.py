"""Hub subscriptions in the running service, against the simulator over real HTTP and a real
SQLite store: projects added and removed while it runs, include/exclude, renamed projects,
and discovery failures (5xx, 429, 403) that leave relationship polling alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator.config import STATIC_TOKEN_USER
from tests.integration.hub_support import (
    HUB,
    SUB,
    events_of,
    for_project,
    hub_config,
    hub_simulator,
)
from tests.integration.main_job_support import wait_for

pytestmark = pytest.mark.timeout(120)


def sample(app: App, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, {"subscription": SUB, **labels})
    return 0.0 if value is None else value


async def stop(app: App, task: asyncio.Task[int]) -> None:
    app.request_stop()
    assert await asyncio.wait_for(task, 30) == 0


async def test_projects_added_and_removed_while_running(tmp_path: Path) -> None:
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        a = sim.hubs.add_project(HUB, "Tower A", relationships=3)
        b = sim.hubs.add_project(HUB, "Tower B", relationships=2)
        app = App(config_from_data(hub_config(tmp_path, sim), environ={}))
        task = asyncio.create_task(app.run())
        await wait_for(lambda: len(for_project(events_of(tmp_path), a)) == 3
                       and len(for_project(events_of(tmp_path), b)) == 2, 30, "bootstrap")
        first = events_of(tmp_path)
        assert {e["data"]["projectName"] for e in for_project(first, a)} == {"Tower A"}
        assert {e["data"]["projectName"] for e in for_project(first, b)} == {"Tower B"}
        assert all(e["snapshot"] for e in first)

        # A project created while running: its events within one discovery period plus one
        # check (1s + max_staleness 1s), with slack for a loaded machine.
        added_at = time.monotonic()
        c = sim.hubs.add_project(HUB, "Tower C", relationships=4)
        await wait_for(lambda: len(for_project(events_of(tmp_path), c)) == 4, 30, "Tower C")
        assert time.monotonic() - added_at < 2.0 + 8.0
        assert {e["data"]["projectName"] for e in for_project(events_of(tmp_path), c)} == {
            "Tower C"}

        # A project removed from the hub: nothing more from it once retired.
        sim.hubs.remove_projects(HUB, [a])
        watcher = app.hubs.watchers[0]
        await wait_for(lambda: watcher.status.retired == 1, 15, "Tower A retired")
        before = len(for_project(events_of(tmp_path), a))
        sim.state.create_relationships(a[2:], 5)
        sim.state.create_relationships(b[2:], 1)
        await wait_for(lambda: len(for_project(events_of(tmp_path), b)) == 3, 15, "Tower B")
        await asyncio.sleep(2.5)  # more than two checks of every polled container
        assert len(for_project(events_of(tmp_path), a)) == before
        assert all(s.spec.container_id != a[2:] for sch in app.schedulers for s in sch.streams)
        assert [sch.stream_count for sch in app.schedulers] == [
            len(sch.streams) for sch in app.schedulers]  # kept as projects come and go

        # Its state follows the orphan retention; the others are live.
        retired = await app.store.get_stream(SUB, a[2:])
        assert retired is not None
        assert retired.orphaned_at is not None
        live = await app.store.get_stream(SUB, b[2:])
        assert live is not None
        assert live.orphaned_at is None

        # Metrics and status per hub subscription.
        assert sample(app, "notifier_hub_projects") == 2
        assert sample(app, "notifier_hub_projects_added_total") == 3
        assert sample(app, "notifier_hub_projects_retired_total") == 1
        assert sample(app, "notifier_hub_discoveries_total", outcome="ok") >= 3
        assert sample(app, "notifier_hub_last_discovery_timestamp_seconds") > 0
        assert watcher.status.watched == 2
        assert watcher.status.added == 3

        # Back in the hub within the retention: resumes from its token (no snapshot replay).
        sim.hubs.add_project(HUB, "Tower A", a)
        await wait_for(lambda: len(for_project(events_of(tmp_path), a)) == before + 5, 20,
                       "Tower A's new relationships after it came back")
        again = for_project(events_of(tmp_path), a)[before:]
        assert not any(e["snapshot"] for e in again)
        assert [sch.stream_count for sch in app.schedulers] == [
            len(sch.streams) for sch in app.schedulers]
        await stop(app, task)


async def test_include_exclude_and_renames(tmp_path: Path) -> None:
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        tower = sim.hubs.add_project(HUB, "Tower A", relationships=2)
        archived = sim.hubs.add_project(HUB, "Tower B (ARCHIVE)", relationships=2)
        depot = sim.hubs.add_project(HUB, "Depot", relationships=2)
        hospital = sim.hubs.add_project(HUB, "North Hospital", relationships=2)
        data = hub_config(tmp_path, sim, projects={"include": ["^Tower", "Hospital"],
                                                   "exclude": ["(?i)archive"]})
        app = App(config_from_data(data, environ={}))
        task = asyncio.create_task(app.run())
        await wait_for(lambda: len(events_of(tmp_path)) == 4, 30, "the included projects")
        await asyncio.sleep(1.5)
        events = events_of(tmp_path)
        assert {e["data"]["containerId"] for e in events} == {tower[2:], hospital[2:]}
        assert app.hubs.watchers[0].status.listed == 4

        # A rename into the filter starts a project; one into the exclusion retires it.
        sim.hubs.rename_project(HUB, depot, "Tower Depot")
        sim.hubs.rename_project(HUB, hospital, "North Hospital archive")
        await wait_for(lambda: len(for_project(events_of(tmp_path), depot)) == 2, 20, "Depot")
        await wait_for(lambda: app.hubs.watchers[0].status.retired == 1, 20, "Hospital retired")
        assert {e["data"]["projectName"] for e in for_project(events_of(tmp_path), depot)} == {
            "Tower Depot"}
        # A rename inside the filter: later events carry the new name.
        sim.hubs.rename_project(HUB, tower, "Tower A2")
        await wait_for(lambda: any(s.spec.project_name == "Tower A2"
                                   for s in app.schedulers[0].streams), 20, "the new name")
        sim.state.create_relationships(tower[2:], 1)
        await wait_for(lambda: len(for_project(events_of(tmp_path), tower)) == 3, 20, "event")
        assert for_project(events_of(tmp_path), tower)[-1]["data"]["projectName"] == "Tower A2"
        assert not for_project(events_of(tmp_path), archived)
        await stop(app, task)


@pytest.mark.parametrize("fault", ["5xx", "429", "403"])
async def test_failed_discovery_keeps_the_list_and_polling(tmp_path: Path, fault: str) -> None:
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        a = sim.hubs.add_project(HUB, "Tower A", relationships=2)
        app = App(config_from_data(hub_config(tmp_path, sim), environ={}))
        task = asyncio.create_task(app.run())
        await wait_for(lambda: len(events_of(tmp_path)) == 2, 30, "bootstrap")
        watcher = app.hubs.watchers[0]
        ok_before = sample(app, "notifier_hub_discoveries_total", outcome="ok")

        if fault == "5xx":
            sim.hubs.set_knobs(always_status=503)
        elif fault == "429":
            sim.hubs.set_knobs(next_statuses=[429] * 6)
        else:
            sim.hubs.set_access(HUB, STATIC_TOKEN_USER, visible=False)
        late = sim.hubs.add_project(HUB, "Tower Late", relationships=3)
        rs_before = sim.state.stats.requests["syncStatus"]

        if fault == "429":
            # Honoured and retried on the discovery budget; polling goes on meanwhile.
            await wait_for(lambda: sim.hubs.stats.statuses["429"] >= 3, 20, "429s served")
            assert not for_project(events_of(tmp_path), late)
        else:
            await wait_for(lambda: watcher.status.consecutive_failures >= 2, 30, "failures")
            outcome = "server_error" if fault == "5xx" else "forbidden"
            assert sample(app, "notifier_hub_discoveries_total", outcome=outcome) >= 2
            assert sample(app, "notifier_hub_discovery_consecutive_failures") >= 2
            assert watcher.status.last_error is not None
            assert ("HTTP 503" if fault == "5xx" else "HTTP 403") in watcher.status.last_error
            assert watcher.status.watched == 1  # the last known list is kept
            assert sample(app, "notifier_hub_discoveries_total", outcome="ok") == ok_before

        # Relationship polling of the known project is unaffected.
        sim.state.create_relationships(a[2:], 2)
        await wait_for(lambda: len(for_project(events_of(tmp_path), a)) == 4, 20,
                       "events of the known project during the discovery failure")
        assert sim.state.stats.requests["syncStatus"] > rs_before
        assert sim.state.stats.statuses.get("429", 0) == 0  # the relationship budget untouched

        # The fault ends: the late project is discovered and polled.
        sim.hubs.set_knobs(always_status=None)
        sim.hubs.set_access(HUB, STATIC_TOKEN_USER, visible=True)
        await wait_for(lambda: len(for_project(events_of(tmp_path), late)) == 3, 40, "late one")
        assert watcher.status.consecutive_failures == 0
        assert watcher.status.retired == 0
        await stop(app, task)


async def test_run_once_discovers_then_drains_every_project(tmp_path: Path) -> None:
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        sim.hubs.set_knobs(page_size=2)
        projects = [sim.hubs.add_project(HUB, f"Tower {n}", relationships=2) for n in "ABCDE"]
        app = App(config_from_data(hub_config(tmp_path, sim, emit_initial=False), environ={}))
        assert await asyncio.wait_for(app.run(once=True), 60) == 0
        assert sim.hubs.stats.requests["projects"] == 3  # five projects, two per page
        assert events_of(tmp_path) == []  # emit_initial: false, also for discovered projects
        assert all(bootstrapped(tmp_path, p) for p in projects)


def bootstrapped(tmp_path: Path, project: str) -> bool:
    """Whether the store holds a bootstrapped stream for the project (read with sqlite3)."""
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as conn:
        row = conn.execute("SELECT sync_token FROM streams WHERE subscription = ? AND "
                           "container_id = ?", (SUB, project[2:])).fetchone()
    conn.close()
    return row is not None and bool(row[0])


async def test_discovery_shares_the_rotating_refresh_token(tmp_path: Path) -> None:
    from notifier.simulator.config import (
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        DEFAULT_REFRESH_TOKEN,
    )

    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        a = sim.hubs.add_project(HUB, "Tower A", relationships=2)
        data = hub_config(tmp_path, sim)
        data["credentials"] = [{"name": "sim", "client_id": DEFAULT_CLIENT_ID,
                                "client_secret": DEFAULT_CLIENT_SECRET,
                                "refresh_token": DEFAULT_REFRESH_TOKEN,
                                "requests_per_minute": 6000}]
        app = App(config_from_data(data, environ={}))
        task = asyncio.create_task(app.run())
        await wait_for(lambda: len(for_project(events_of(tmp_path), a)) == 2, 30, "bootstrap")
        sim.state.expire_access_tokens()
        b = sim.hubs.add_project(HUB, "Tower B", relationships=2)
        await wait_for(lambda: len(for_project(events_of(tmp_path), b)) == 2, 30, "Tower B")
        sim.state.create_relationships(a[2:], 1)
        await wait_for(lambda: len(for_project(events_of(tmp_path), a)) == 3, 30, "Tower A")
        counters = sim.state.auth.counters
        assert counters.refreshes >= 2  # the first token, and one after the expiry
        assert counters.invalid_grants == 0  # one provider: never a spent refresh token reused
        await stop(app, task)
