"""Cluster-mode chaos harness: replicas as real ``notifier run`` processes, and the
read_committed reader that checks the events topic holds every change exactly once.

* ``Replica``: one ``python -m notifier run --config F`` with its own local cache (state.path)
  and metrics port, killable (SIGKILL), stoppable (SIGTERM), freezable (SIGSTOP/SIGCONT), whose
  ``/metrics`` is scraped for what it owns.
* ``Replicas``: the set of them sharing one consumer group, with waits on ownership.
* ``CommittedReader``: an ``isolation.level=read_committed`` consumer tailing the events topic
  from its beginning, as a downstream service would; it only ever sees committed transactions.
* ``assert_exactly_once``: zero duplicate (subscription, event id) pairs, plus the fault suite's
  checks (nothing lost, nothing invented, created before deleted, final state = truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from notifier.cluster.partitions import partition_of
from notifier.simulator import Simulator
from tests.integration.fault_support import (
    NotifierProcess,
    Subs,
    assert_delivery,
    event_from_record,
)
from tests.integration.kafka_support import free_port, partition_ids
from tests.integration.main_job_support import wait_for, write_config

# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSettings:
    """The ``cluster:`` section every replica of a test shares."""

    bootstrap: str
    group: str
    state_topic: str
    work_partitions: int = 6
    session_timeout: str = "6s"  # the broker's group.min.session.timeout.ms is 6 s

    def section(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "group": self.group,
                "state_topic": self.state_topic, "work_partitions": self.work_partitions,
                "session_timeout": self.session_timeout}


def spread_names(n: int, partitions: int) -> list[str]:
    """``n`` credential names that hash onto as many different work partitions as possible
    (round robin over the partitions), so every replica gets some of the work."""
    by_partition: dict[int, list[str]] = {}
    i = 0
    while sum(len(v) for v in by_partition.values()) < 4 * n:
        name = f"cred-{i}"
        by_partition.setdefault(partition_of(name, partitions), []).append(name)
        i += 1
    names: list[str] = []
    while len(names) < n:
        for p in sorted(by_partition):
            if by_partition[p] and len(names) < n:
                names.append(by_partition[p].pop(0))
    return names


def sim_credentials(sim: Simulator, names: Sequence[str]) -> list[dict[str, Any]]:
    """One credential per name, each its own simulator user with a fresh single-use refresh
    token (three-legged, rotated on every refresh)."""
    out = []
    for name in names:
        token = sim.state.auth.add_refresh_token(user=f"user-{name}")
        out.append({"name": name, "client_id": sim.config.client_id,
                    "client_secret": sim.config.client_secret, "refresh_token": token,
                    "requests_per_minute": 6000})
    return out


# -- replicas ----------------------------------------------------------------------------------


class Replica:
    """One replica: its directory (config, local cache, output) and its process."""

    def __init__(self, name: str, root: Path, config: Mapping[str, Any]) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        data = dict(config)
        data["state"] = {**data.get("state", {}), "path": str(self.dir / "cache.db")}
        data["metrics"] = {"enabled": True, "listen": f"127.0.0.1:{self.port}"}
        self.config = write_config(self.dir, data)
        self.process = NotifierProcess(self.config, self.dir)
        self.paused = False

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    async def start(self) -> None:
        await self.process.start()

    async def kill(self) -> None:
        if self.paused:
            self.resume()
        await self.process.kill()

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM; returns its exit status (it must exit within ``within`` seconds)."""
        return await self.process.stop(within)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def output(self) -> str:
        return self.process.output()

    async def metrics(self) -> dict[str, float]:
        """Every sample of its /metrics, as ``name{label="v",...}`` -> value ({} if down)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    async def owned(self) -> int:
        """Work partitions it owns and has restored (0 while down or paused)."""
        if not self.running or self.paused:
            return 0
        m = await self.metrics()
        owned = m.get("notifier_cluster_owned_partitions", 0.0)
        restoring = m.get("notifier_cluster_restoring_partitions", 0.0)
        return int(owned - restoring)


@dataclass
class Replicas:
    """The replicas of one consumer group."""

    settings: ClusterSettings
    members: list[Replica] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, settings: ClusterSettings, config: Mapping[str, Any],
               n: int) -> Replicas:
        data = {**config, "cluster": settings.section()}
        return cls(settings, [Replica(f"replica-{i}", root, data) for i in range(n)])

    async def start(self) -> None:
        for r in self.members:
            await r.start()

    def running(self) -> list[Replica]:
        return [r for r in self.members if r.running and not r.paused]

    async def ownership(self) -> dict[str, int]:
        return {r.name: await r.owned() for r in self.members}

    async def wait_all_owned(self, within: float, what: str = "every work partition owned"
                             ) -> dict[str, int]:
        """Until the running replicas own (restored) every work partition between them."""
        last: dict[str, int] = {}

        async def done() -> bool:
            nonlocal last
            last = await self.ownership()
            return sum(last.values()) == self.settings.work_partitions

        try:
            await wait_for(done, within, what, interval=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ownership: {last}") from None
        return last

    async def stop_all(self, within: float = 30.0) -> None:
        for r in self.members:
            if r.paused:
                r.resume()
            if r.running:
                await r.terminate(within)

    async def kill_all(self) -> None:
        for r in self.members:
            if r.running:
                with contextlib.suppress(AssertionError):
                    await r.kill()

    def output(self) -> str:
        return "\n".join(f"--- {r.name} ---\n{r.output()}" for r in self.members)


# -- the events topic, read as a downstream consumer would ---------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


class CommittedReader:
    """Tails ``topic`` from its beginning with ``isolation.level=read_committed`` and keeps every
    record it is given, in each partition's order. Survives broker restarts (the consumer
    reconnects by itself)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[ConsumerRecord] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        self._tps = [TopicPartition(self.topic, p)
                     for p in await partition_ids(self.bootstrap, self.topic)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            request_timeout_ms=15_000, retry_backoff_ms=200)
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        self._task = asyncio.create_task(self._tail())

    async def _tail(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(*self._tps, timeout_ms=300)
            except (KafkaError, OSError):  # a broker restart: the consumer reconnects
                await asyncio.sleep(0.5)
                continue
            for tp in sorted(batch, key=lambda t: t.partition):
                self.records.extend(batch[tp])

    async def caught_up(self) -> bool:
        """Whether it has read up to the last stable offset of every partition (read_committed:
        nothing committed is left to read, open transactions are not waited for)."""
        assert self._consumer is not None
        try:
            end = await self._consumer.end_offsets(self._tps)
        except (KafkaError, OSError):  # the broker is away
            return False
        for tp in self._tps:
            if await self._consumer.position(tp) < end[tp]:
                return False
        return True

    def events(self) -> list[dict[str, Any]]:
        ordered = sorted(self.records, key=lambda r: (r.partition, r.offset))
        return [event_from_record(r) for r in ordered]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def __aenter__(self) -> CommittedReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def duplicate_ids(events: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(subscription, event id) delivered more than once, with how many times."""
    counts = Counter((e["data"]["subscription"], e["id"]) for e in events)
    return {k: n for k, n in counts.items() if n > 1}


def assert_exactly_once(sim: Simulator, subs: Subs, events: Sequence[Mapping[str, Any]], *,
                        since_start: Mapping[str, int], since_caught: Mapping[str, int] | None
                        ) -> None:
    """Every change exactly once: no duplicate, nothing lost or invented, created before
    deleted, and the replayed stream ends in the simulator's live set."""
    dups = duplicate_ids(events)
    assert not dups, f"{len(dups)} changes delivered more than once, e.g. " \
        f"{sorted(dups.items())[:3]}"
    assert_delivery(sim, subs, events, since_start=since_start, since_caught=since_caught,
                    what="read_committed")
