"""Cluster-mode benchmark plumbing: replicas as ``notifier run --config`` processes with a
``cluster:`` section, their /metrics, and a read_committed tail of the events topic.

A replica is measured from outside: its CPU from /proc/PID/stat, its peak memory from
/proc/PID/status (VmHWM), what it owns from its own /metrics (``notifier_cluster_*``). The
events topic is read with ``isolation.level=read_committed``, as an exactly-once consumer reads
it, by a consumer in the benchmark's process (its CPU is not the notifier's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import PYTHON, ROOT, STATIC_TOKEN, UNLIMITED_RPM, free_port, proc_status_kib


def spread_credentials(n: int, partitions: int) -> list[str]:
    """``n`` credential names hashed onto different work partitions (round robin)."""
    from notifier.cluster.partitions import partition_of

    names: list[str] = []
    taken: dict[int, int] = {}
    i = 0
    while len(names) < n:
        name = f"cred-{i}"
        p = partition_of(name, partitions)
        if taken.get(p, 0) <= min(taken.get(q, 0) for q in range(partitions)):
            names.append(name)
            taken[p] = taken.get(p, 0) + 1
        i += 1
    return names


def cluster_config(*, sim_url: str, bootstrap: str, group: str, topic: str,
                   subscriptions: list[dict[str, Any]], credentials: list[str],
                   work_partitions: int, poll: dict[str, Any] | None = None,
                   cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """A replica's configuration for the simulator (static token, unlimited budget); state.path
    and metrics are set per replica by ``Replica``."""
    return {
        "source": {"base_url": sim_url, "max_attempts": 3, "allow_insecure_http": True,
                   "concurrency": 8},
        "credentials": [{"name": c, "access_token": STATIC_TOKEN,
                         "requests_per_minute": UNLIMITED_RPM} for c in credentials],
        "poll": poll or {"interval": "0.5s"},
        "subscriptions": subscriptions,
        "sinks": [{"name": "events", "type": "kafka", "bootstrap_servers": bootstrap,
                   "topic": topic, "partitions": 3}],
        "cluster": {"bootstrap_servers": bootstrap, "group": group,
                    "state_topic": f"{group}.state", "work_partitions": work_partitions,
                    **(cluster or {})},
        "logging": {"level": "INFO", "format": "text"},
    }


@dataclass
class Replica:
    """One ``notifier run`` process of the group, with its own cache and metrics port."""

    name: str
    workdir: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int = 0

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config)
        cfg["state"] = {"path": str(self.workdir / "cache.db")}
        cfg["metrics"] = {"enabled": True, "listen": f"127.0.0.1:{self.port}"}
        path = self.workdir / "config.json"
        path.write_text(json.dumps(cfg))
        log = (self.workdir / "notifier.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([PYTHON, "-m", "notifier", "run", "--config", str(path)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sample_memory(self) -> int:
        """Track the peak RSS (VmHWM) while it runs; returns it in KiB."""
        if self.running:
            with contextlib.suppress(OSError):
                self.peak_rss_kib = max(self.peak_rss_kib, proc_status_kib("VmHWM", self.pid))
        return self.peak_rss_kib

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, within: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(within)

    def metrics(self) -> dict[str, float]:
        """Its /metrics samples, ``name{labels}`` -> value ({} when it does not answer)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=3) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def owned(self) -> int:
        """Work partitions owned and restored (0 when down)."""
        if not self.running:
            return 0
        m = self.metrics()
        return int(m.get("notifier_cluster_owned_partitions", 0)
                   - m.get("notifier_cluster_restoring_partitions", 0))

    def log(self) -> str:
        path = self.workdir / "notifier.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_until(predicate: Any, within: float, what: str, interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; the seconds it took (SystemExit after ``within``)."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > within:
            raise SystemExit(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - began


def owned_by_all(replicas: list[Replica]) -> int:
    return sum(r.owned() for r in replicas)


@contextlib.contextmanager
def stopped_at_exit(replicas: list[Replica]) -> Iterator[None]:
    try:
        yield
    finally:
        for r in replicas:
            if r.running:
                assert r.proc is not None
                r.proc.kill()
                r.proc.wait()


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Create the events topic up front, so a reader can be assigned its partitions at once."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())


class CommittedTail:
    """A read_committed consumer of ``topic`` (which must exist, with ``partitions``) from its
    beginning, on its own event loop in a thread; ``records`` grows as transactions commit."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 3) -> None:
        import threading

        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> CommittedTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed",
                                    max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                except KafkaError:
                    await asyncio.sleep(0.5)
                    continue
                for msgs in batch.values():
                    self.records.extend((m.key, m.value, list(m.headers)) for m in msgs)
        finally:
            await consumer.stop()

    def ids(self) -> list[str]:
        """The ``ce_id`` of every record read so far."""
        return [dict(h)["ce_id"].decode() for _, _, h in list(self.records)]
