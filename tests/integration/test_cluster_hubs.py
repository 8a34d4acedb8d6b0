"""Hub subscriptions in cluster mode, on a real Kafka broker against the simulator's hubs: only
the replica that owns the hub credential's work partition discovers the hub, and what it
persists (the discovered projects' streams, the retired ones marked orphaned) is in the state
topic, so after a SIGKILL the new owner carries on: no project is bootstrapped twice (a
read_committed consumer sees every change exactly once), projects added or removed after the
failover are picked up or retired, and the retirement is in the topic; a retired project's
state is dropped from the topic once state.orphan_retention has passed (at the next change of
the hub's projects, or when a partition's new owner starts)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from notifier.cluster.transfer import export_state
from notifier.config import load_config
from notifier.state.sqlite import SqliteStateStore
from tests.integration.cluster_support import Cluster
from tests.integration.fault_support import assert_no_traceback
from tests.integration.hub_support import HUB, SUB, hub_config, hub_simulator
from tests.integration.main_job_support import wait_for
from tests.integration.replica_support import ClusterSettings, Replica, Replicas

pytestmark = pytest.mark.kafka


def per_project(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["data"]["containerId"] for e in events)


async def owning(replicas: Replicas) -> bool:
    """Every partition owned, and each replica owns some."""
    owned = await replicas.ownership()
    return sum(owned.values()) == replicas.settings.work_partitions and all(owned.values())


def since_assigned(replica: Replica) -> str:
    """Its log since its last assignment (a replica that starts first owns every partition
    until the other joins, and may discover the hub meanwhile)."""
    return replica.output().split("work partitions assigned")[-1]


def owns_the_hub(replica: Replica) -> bool:
    return "running: 1 credential(s)" in since_assigned(replica)


@pytest.mark.timeout(180)
async def test_the_hub_owner_dies_and_the_new_owner_carries_on(tmp_path: Path,
                                                                kafka_bootstrap: str) -> None:
    cluster = Cluster(kafka_bootstrap)
    settings = ClusterSettings(bootstrap=kafka_bootstrap, group=cluster.group,
                               state_topic=cluster.state_topic)
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        a = sim.hubs.add_project(HUB, "Tower A", relationships=3)[2:]
        b = sim.hubs.add_project(HUB, "Tower B", relationships=2)[2:]
        data = hub_config(tmp_path, sim, sinks=["events"])
        data["sinks"] = [{"name": "events", "type": "kafka", "bootstrap_servers": kafka_bootstrap,
                          "topic": cluster.events_topic}]
        # Drops wait for a change of the hub's projects: short enough to see one in the test.
        data["state"] = {**data.get("state", {}), "orphan_retention": "2s"}
        replicas = Replicas.create(tmp_path, settings, data, 2)

        async def delivered(want: dict[str, int]) -> bool:
            got = per_project(await cluster.events())
            return all(got[cid] >= n for cid, n in want.items())

        try:
            await replicas.start()
            await wait_for(lambda: delivered({a: 3, b: 2}), 60, "the hub's projects bootstrapped",
                           interval=0.5)
            # Both have joined: each owns some of the partitions, so the hub's stays put.
            await wait_for(lambda: owning(replicas), 60, "both replicas owning partitions",
                           interval=0.5)
            await wait_for(lambda: any(owns_the_hub(r) for r in replicas.members), 30,
                           "a replica running the hub's partition", interval=0.5)
            owner = next(r for r in replicas.members if owns_the_hub(r))
            other = next(r for r in replicas.members if r is not owner)
            assert "hub subscription" not in since_assigned(other), \
                "only the owner discovers the hub"
            await owner.kill()
            c = sim.hubs.add_project(HUB, "Tower C", relationships=4)[2:]
            sim.state.create_relationships(a, 2)
            sim.hubs.remove_projects(HUB, ["b." + b])
            await wait_for(lambda: delivered({a: 5, c: 4}), 60,
                           "the new owner polling the old and the new projects", interval=0.5)
            await wait_for(lambda: owns_the_hub(other), 5, "the survivor owning the hub")
            state = tmp_path / "exported.db"

            async def retired_in_topic(cid: str) -> bool:
                state.unlink(missing_ok=True)
                await export_state(load_config(other.config), state)
                async with SqliteStateStore(state) as store:
                    st = await store.get_stream(SUB, cid)
                return st is not None and st.orphaned_at is not None

            await wait_for(lambda: retired_in_topic(b), 30,
                           "the retirement of Tower B in the state topic", interval=1.0)
            # Past the retention, the next change of the hub's projects drops Tower B's state.
            await asyncio.sleep(2.5)
            d = sim.hubs.add_project(HUB, "Tower D", relationships=1)[2:]
            await wait_for(lambda: delivered({d: 1}), 60, "Tower D polled", interval=0.5)

            async def dropped(cid: str) -> bool:
                state.unlink(missing_ok=True)
                await export_state(load_config(other.config), state)
                async with SqliteStateStore(state) as store:
                    return await store.get_stream(SUB, cid) is None

            await wait_for(lambda: dropped(b), 30, "Tower B's state dropped from the topic",
                           interval=1.0)
            # Tower C retired; past the retention its partition's next owner (the first
            # replica, restarted after the survivor stops) drops it at its start, with no
            # change of the hub's projects to prompt it.
            sim.hubs.remove_projects(HUB, ["b." + c])
            await wait_for(lambda: retired_in_topic(c), 30,
                           "the retirement of Tower C in the state topic", interval=1.0)
            assert await other.terminate() == 0
            await asyncio.sleep(2.5)
            before = len(owner.output())
            await owner.start()
            await wait_for(lambda: dropped(c), 60, "Tower C's state dropped by the new owner",
                           interval=1.0)
            restarted = owner.output()[before:]
            assert "forgot 1 orphaned stream(s)" in restarted
            assert "projects watched (" not in restarted, "dropped at start, not by a change"
            await replicas.stop_all()
        except BaseException:
            print(replicas.output(), file=sys.stderr)
            await replicas.kill_all()
            raise
    events = await cluster.events()
    counts = Counter(e["id"] for e in events)
    assert [i for i, n in counts.items() if n > 1] == [], "a change delivered twice"
    assert per_project(events) == {a: 5, b: 2, c: 4, d: 1}
    assert {e["data"]["projectName"] for e in events if e["data"]["containerId"] == c} == {
        "Tower C"}
    async with SqliteStateStore(state) as store:
        live = await store.get_stream(SUB, a)
    assert live is not None
    assert live.orphaned_at is None
    for r in replicas.members:
        assert_no_traceback(r.output())
