"""The simulator's hub and project listings, ProjectsClient and ``notifier discover``, over real
HTTP: JSON:API paging through links.next, 403 for a hidden hub, projects added and removed at
run time through /_sim/hubs, injected 5xx/429 retried, and the discover command's table."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from notifier.core.budget import RequestBudget
from notifier.errors import ForbiddenError, NotFoundError, ServerError
from notifier.simulator import Simulator, SimulatorConfig
from notifier.simulator.config import DEFAULT_ACCESS_TOKEN, STATIC_TOKEN_USER
from notifier.source.auth import StaticTokenProvider
from notifier.source.client import RelationshipClient
from notifier.source.http import create_session
from notifier.source.projects import ProjectsClient
from tests.integration.main_job_support import ROOT, base_config, write_config

HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(containers=[], seed=3)) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[ProjectsClient]:
    async with create_session() as session:
        caller = RelationshipClient(
            session, base_url=sim.url, credential_name="main",
            tokens=StaticTokenProvider(DEFAULT_ACCESS_TOKEN), budget=RequestBudget(6000, 100),
            max_attempts=4, backoff_base=0.02, backoff_cap=0.1)
        yield ProjectsClient(caller, sim.url)


async def control(sim: Simulator, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}/_sim/{path}", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_projects_are_paged_through_links_next(sim, client) -> None:
    sim.hubs.add_hub(HUB, "Acme", projects=250)
    sim.hubs.set_knobs(page_size=100)
    projects = await client.projects(HUB)
    assert [p.name for p in projects] == [f"Project {i:04d}" for i in range(1, 251)]
    assert len({p.id for p in projects}) == 250
    assert sim.hubs.stats.requests["projects"] == 3
    # every project's container exists in the Relationship Service
    assert {p.container_id for p in projects} <= set(sim.containers)


async def test_added_and_removed_at_run_time(sim, client) -> None:
    await control(sim, "hubs", {"id": HUB, "name": "Acme", "projects": 2})
    first = await client.projects(HUB)
    added = await control(sim, f"hubs/{HUB}/projects", {"name": "Tower C", "relationships": 5})
    new_id = added["ids"][0]
    assert new_id[2:] in sim.containers
    await control(sim, f"hubs/{HUB}/projects:delete", {"ids": [first[0].id]})
    await control(sim, f"hubs/{HUB}/projects:rename", {"id": first[1].id, "name": "Renamed"})
    after = {p.id: p.name for p in await client.projects(HUB)}
    assert after == {first[1].id: "Renamed", new_id: "Tower C"}


async def test_hidden_hub_is_403_unknown_is_404(sim, client) -> None:
    other = sim.hubs.add_hub(None, "Other")
    sim.hubs.add_hub(HUB, "Acme", projects=1)
    await control(sim, f"hubs/{HUB}/access", {"user": STATIC_TOKEN_USER, "visible": False})
    with pytest.raises(ForbiddenError) as info:
        await client.projects(HUB)
    assert info.value.status == 403
    assert [h.id for h in await client.hubs()] == [other]
    with pytest.raises(NotFoundError):
        await client.projects("b.11111111-2222-4333-8444-555555555555")


async def test_injected_5xx_and_429_are_retried(sim, client) -> None:
    sim.hubs.add_hub(HUB, "Acme", projects=3)
    await control(sim, "hubs-knobs", {"next_statuses": [503, 429, 500]})
    assert len(await client.projects(HUB)) == 3
    assert sim.hubs.stats.statuses == {"503": 1, "429": 1, "500": 1, "200": 1}
    sim.hubs.set_knobs(always_status=502)
    with pytest.raises(ServerError):
        await client.projects(HUB)


async def test_rate_limit_is_per_user_and_endpoint(sim) -> None:
    sim.hubs.add_hub(HUB, "Acme", projects=1)
    sim.hubs.set_knobs(rpm=2)
    headers = {"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        statuses = []
        for _ in range(3):
            async with s.get(f"{sim.url}/project/v1/hubs/{HUB}/projects") as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After")
        async with s.get(f"{sim.url}/project/v1/hubs") as r:
            hubs_status = r.status
        async with aiohttp.ClientSession() as anon, \
                anon.get(f"{sim.url}/project/v1/hubs") as r:
            anonymous = r.status
    assert statuses == [200, 200, 429]
    assert retry_after is not None
    assert int(retry_after) > 0
    assert hubs_status == 200
    assert anonymous == 401


# --- notifier discover ----------------------------------------------------------------------


async def run_discover(config: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "discover", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def hub_config(tmp_path: Path, sim: Simulator, **sub: Any) -> Path:
    subscription = {"name": "all-projects", "credential": "sim", "hub_id": HUB,
                    "sinks": ["archive"], **sub}
    return write_config(tmp_path, base_config(tmp_path, sim.url, [subscription]))


async def test_discover_prints_what_would_be_watched(sim, tmp_path) -> None:
    sim.hubs.add_hub(HUB, "Acme")
    tower = sim.hubs.add_project(HUB, "Tower A")
    archived = sim.hubs.add_project(HUB, "Tower B (Archive)")
    other = sim.hubs.add_project(HUB, "Depot")
    config = hub_config(tmp_path, sim, projects={"include": ["^Tower", "Hospital"],
                                                 "exclude": ["(?i)archive"]})
    code, out, err = await run_discover(config)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"subscription all-projects: hub {HUB}, 3 projects, 1 watched"
    assert lines[1].split() == ["NAME", "PROJECT", "ID", "CONTAINER", "ID", "WATCHED"]
    rows = [line.split("  ") for line in lines[2:]]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert cells == [
        ["Tower A", tower, tower[2:], "included"],
        ["Tower B (Archive)", archived, archived[2:], "excluded by '(?i)archive'"],
        ["Depot", other, other[2:], "matches no include pattern"],
    ]

    code, out, _ = await run_discover(config, "--json")
    assert code == 0
    items = [orjson.loads(line) for line in out.splitlines()]
    assert items[0] == {"subscription": "all-projects", "hubId": HUB, "name": "Tower A",
                        "projectId": tower, "containerId": tower[2:], "included": True,
                        "reason": "included"}
    assert [i["included"] for i in items] == [True, False, False]


async def test_discover_explains_a_forbidden_hub(sim, tmp_path) -> None:
    sim.hubs.add_hub(HUB, "Acme", projects=1)
    visible = sim.hubs.add_hub(None, "Visible hub")
    sim.hubs.set_access(HUB, STATIC_TOKEN_USER, visible=False)
    code, out, err = await run_discover(hub_config(tmp_path, sim))
    assert code == 1
    assert out == ""
    assert f"subscription all-projects: cannot list hub {HUB} as credential sim" in err
    assert "(HTTP 403)" in err
    assert f"hubs this user sees: {visible} (Visible hub)" in err



async def test_simulate_command_serves_a_demo_hub(capsys: pytest.CaptureFixture[str]) -> None:
    from notifier.cli.simulate import DEMO_HUB, build_parser, config_from_args, serve

    args = build_parser().parse_args(["--port", "0", "--containers", "0", "--hub-projects", "3",
                                      "--relationships", "2", "--change-rate", "0"])
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config_from_args(args), stop,
                                     hub_projects=args.hub_projects))
    try:
        for _ in range(100):
            banner = capsys.readouterr().out
            if "listening on" in banner:
                break
            await asyncio.sleep(0.05)
        url = banner.split("listening on ", 1)[1].split()[0]
        assert f"hub:            {DEMO_HUB} (3 projects" in banner
        headers = {"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as s, \
                s.get(f"{url}/project/v1/hubs/{DEMO_HUB}/projects") as r:
            body = await r.json()
        assert [p["attributes"]["name"] for p in body["data"]] == [
            "Project 0001", "Project 0002", "Project 0003"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
