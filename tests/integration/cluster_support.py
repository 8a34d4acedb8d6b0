"""Cluster-mode helpers: replicas of ``notifier run`` sharing a group, and reading the events
topic the way an exactly-once consumer does (read_committed)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from notifier.cluster.coordinator import Coordinator
from notifier.cluster.partitions import WorkMap
from notifier.cluster.store import ClusterStore
from notifier.cluster_metrics import ClusterMetrics
from notifier.config.cluster import ClusterConfig
from notifier.simulator import Simulator
from tests.integration.fault_support import NotifierProcess, event_from_record
from tests.integration.kafka_support import read_topic, topic_names
from tests.integration.main_job_support import base_config, write_config

CONTAINERS = ("0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70", "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53",
              "2c4e6a80-1b3d-4f5e-8a7c-9e0d1f2a3b4c", "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")
CREDENTIALS = ("alice", "bob", "carol", "dave")


class Cluster:
    """Names unique to one test: the group, the state topic and the events topic."""

    def __init__(self, bootstrap: str, partitions: int = 6) -> None:
        tag = uuid.uuid4().hex[:10]
        self.bootstrap = bootstrap
        self.group = f"notifier-test-{tag}"
        self.state_topic = f"{self.group}.state"
        self.events_topic = f"{self.group}.events"
        self.partitions = partitions

    def subscriptions(self) -> list[dict[str, Any]]:
        """One subscription per credential, each on its own container."""
        return [{"name": f"sub-{c}", "credential": c, "container_id": cid, "sinks": ["events"]}
                for c, cid in zip(CREDENTIALS, CONTAINERS, strict=True)]

    def config(self, sim: Simulator, workdir: Path, **cluster: Any) -> Path:
        """A replica's configuration, its local cache in ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        kafka = {"name": "events", "type": "kafka", "bootstrap_servers": self.bootstrap,
                 "topic": self.events_topic}
        data = base_config(workdir, sim.url, self.subscriptions(), sinks=[kafka],
                           poll={"interval": "0.5s"})
        data["credentials"] = [{"name": c, "access_token": sim.config.access_token,
                                "requests_per_minute": 6000} for c in CREDENTIALS]
        data["cluster"] = {"bootstrap_servers": self.bootstrap, "group": self.group,
                           "state_topic": self.state_topic, "work_partitions": self.partitions,
                           "session_timeout": "6s", **cluster}
        return write_config(workdir, data)

    def replica(self, sim: Simulator, workdir: Path, **cluster: Any) -> NotifierProcess:
        return NotifierProcess(self.config(sim, workdir, **cluster), workdir)

    def replica_for(self, config: Path, workdir: Path) -> NotifierProcess:
        """A replica of a configuration written (and perhaps edited) beforehand."""
        return NotifierProcess(config, workdir)

    async def events(self) -> list[dict[str, Any]]:
        """Every committed event on the topic now ([] before it exists)."""
        if self.events_topic not in await topic_names(self.bootstrap):
            return []
        records = await read_topic(self.bootstrap, self.events_topic, within=20,
                                   isolation_level="read_committed")
        return [event_from_record(r) for r in records]


@contextlib.asynccontextmanager
async def running_coordinator(
    cfg: ClusterConfig, cache: Path, work: WorkMap,
    start_work: Callable[[list[str], Any], Awaitable[list[Any]]],
    registry: CollectorRegistry | None = None, **options: Any,
) -> AsyncIterator[tuple[Coordinator, ClusterStore, asyncio.Task[None]]]:
    """A replica's coordinator in this process, on a cache at ``cache``, ``start_work`` called
    for each partition it starts, its metrics in ``registry``, ``options`` to Coordinator;
    stopped (and awaited) on leaving."""
    async with ClusterStore(cache, work) as store:
        coordinator = Coordinator(cfg, store, ClusterMetrics(registry or CollectorRegistry()),
                                  start_work, **options)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(coordinator.run(stop))
        try:
            yield coordinator, store, task
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
