"""Real Apache Kafka for the integration tests: broker lifecycle, readers, pytest fixtures.

Register it once, in tests/conftest.py::

    pytest_plugins = ["tests.integration.kafka_support"]

Fixtures: ``kafka_broker`` (session, a ``KafkaBroker``), ``kafka_bootstrap`` (session,
``"127.0.0.1:PORT"``), ``kafka_topic`` (a fresh topic name per test) and ``dedicated_kafka`` (a
private broker on its own port that the test may stop and restart; stopped afterwards).

The session broker is the one named by ``KAFKA_BOOTSTRAP`` if set; otherwise ``scripts/kafka.sh
start`` runs one on ``KAFKA_PORT`` (or a free port). As a plugin it is started right after
collection when a ``kafka``-marked test was collected, so the one-time jar download is not charged
to a test's timeout, and it is stopped when the session ends. Under pytest-xdist (``-n``) the
workers share one such broker: the first worker to need it starts it (the others wait on a file
lock in a directory the controller names, ``NOTIFIER_TEST_KAFKA_SHARED``) and the controller
stops it at the end. Without bash, Java or Maven (and no cached jars) the Kafka tests skip with
the reason, unless ``KAFKA_REQUIRED=1`` or ``CI=true``, where they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from notifier.core.events import ChangeKind, Event, build_event
from notifier.source.models import Relationship

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kafka.sh"
NOTIFIER_CACHE = Path(os.environ.get("NOTIFIER_CACHE", Path.home() / ".cache" / "notifier"))
START_TIMEOUT = 900.0  # the first start downloads the broker jars with mvn
SHARED_ENV = "NOTIFIER_TEST_KAFKA_SHARED"  # set by an xdist controller for its workers
_SHARED_KEY = pytest.StashKey[Path]()


def kafka_required() -> bool:
    """Whether a missing broker or tool fails the tests instead of skipping them."""
    return os.environ.get("KAFKA_REQUIRED") == "1" or os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    if kafka_required():
        pytest.fail(f"{reason} (KAFKA_REQUIRED/CI set: not skipping)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited: no longer in /proc, or a zombie with no live thread (the
    same test as scripts/kafka.sh's ``alive``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    state = fields.get("State", "").strip()[:1]
    threads = int(fields.get("Threads", "1").strip() or 1)
    return state == "Z" and threads <= 1


def script_unavailable_reason() -> str | None:
    """Why scripts/kafka.sh cannot start a broker here, or None if it can."""
    if not SCRIPT.is_file():
        return f"{SCRIPT.relative_to(ROOT)} not found"
    if shutil.which("bash") is None:
        return "bash not found"
    java = os.environ.get("JAVA") or (
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME")
        else shutil.which("java"))
    if not java or not Path(java).exists():
        return "Java 17+ not found (needed by scripts/kafka.sh; see scripts/install-tools.sh)"
    if shutil.which("mvn") is None and not any(NOTIFIER_CACHE.glob("kafka-*/libs/.complete")):
        return "mvn not found and no cached Kafka jars (see scripts/install-tools.sh)"
    return None


def require_script(what: str) -> None:
    """Skip (or, when Kafka is required, fail) unless scripts/kafka.sh can start a broker."""
    reason = script_unavailable_reason()
    if reason is not None:
        skip_or_fail(f"{what}: {reason}")


@dataclass
class KafkaBroker:
    """A broker reached at ``bootstrap``; ``port`` is set when scripts/kafka.sh manages it."""

    bootstrap: str
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. KAFKA_EXTRA_CONFIG

    @property
    def managed(self) -> bool:
        return self.port is not None

    def _script(self, command: str, *, keep_data: bool = False, timeout: float = 120) -> str:
        assert self.port is not None, "an external broker (KAFKA_BOOTSTRAP) is not ours to drive"
        env = {**os.environ, **self.env, "KAFKA_PORT": str(self.port),
               "KAFKA_KEEP_DATA": "1" if keep_data else "0"}
        proc = subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/kafka.sh {command} (port {self.port}) failed with "
                               f"{proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc.stdout

    def start(self, *, keep_data: bool = False, timeout: float = START_TIMEOUT) -> None:
        """Start the broker (fresh storage, or the previous data with ``keep_data``)."""
        lines = self._script("start", keep_data=keep_data, timeout=timeout).split()
        if not lines or lines[-1] != self.bootstrap:
            raise RuntimeError(f"unexpected scripts/kafka.sh start output {lines!r}")

    def stop(self) -> None:
        self._script("stop")

    def pid(self) -> int:
        """The broker's process id (it must be running)."""
        words = self._script("status").split()
        if words[:2] != ["running", "pid"]:
            raise RuntimeError(f"broker on port {self.port} is not running: {words!r}")
        return int(words[2])

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the broker process (SIGKILL: crash, SIGSTOP/SIGCONT: freeze)."""
        os.kill(self.pid(), signum)

    def kill(self, within: float = 30.0) -> None:
        """Crash the broker (SIGKILL) and wait until its process is gone: reaped, or a zombie
        with no thread left (its sockets and data dir lock are released; only its parent, init
        by now, has yet to reap it, which may take a while on a loaded machine)."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + within
        while not process_gone(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker pid {pid} still exists {within}s after SIGKILL")
            time.sleep(0.05)

    def remove_data(self) -> None:
        """Delete the stopped broker's files (scripts/kafka.sh keeps them per port)."""
        assert self.port is not None
        shutil.rmtree(NOTIFIER_CACHE / "kafka-run" / str(self.port), ignore_errors=True)

    @classmethod
    def on_port(cls, port: int, **env: str) -> KafkaBroker:
        return cls(bootstrap=f"127.0.0.1:{port}", port=port, env=env)


class _Session:
    """The session broker, started at most once (a failed start is remembered, not retried).

    Under pytest-xdist the workers share it through ``NOTIFIER_TEST_KAFKA_SHARED``: started by
    whichever worker comes first, stopped by the controller (``stop_shared``), never by a worker.
    """

    broker: KafkaBroker | None = None
    error: str | None = None
    owned = False  # whether this process stops the broker at the end

    @classmethod
    def start(cls) -> KafkaBroker:
        if cls.broker is not None:
            return cls.broker
        if cls.error is not None:
            raise RuntimeError(cls.error)
        external = os.environ.get("KAFKA_BOOTSTRAP")
        if external:
            cls.broker = KafkaBroker(bootstrap=external)
            return cls.broker
        shared = os.environ.get(SHARED_ENV)
        if shared:
            cls.broker = cls._start_shared(Path(shared))
            return cls.broker
        cls.broker = cls._start_new()
        cls.owned = True
        return cls.broker

    @classmethod
    def _start_new(cls) -> KafkaBroker:
        broker = KafkaBroker.on_port(int(os.environ.get("KAFKA_PORT") or free_port()))
        try:
            broker.start()
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            cls.error = f"could not start the session Kafka broker: {err}"
            raise RuntimeError(cls.error) from err
        return broker

    @classmethod
    def _start_shared(cls, directory: Path) -> KafkaBroker:
        """The broker the xdist workers share: started by the first worker that takes the lock,
        found in ``broker.json`` by the others (a failed start is recorded there too)."""
        record = directory / "broker.json"
        with (directory / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while the first worker starts the broker
            if not record.exists():
                try:
                    broker = cls._start_new()
                except RuntimeError as err:
                    record.write_text(json.dumps({"error": str(err)}))
                    raise
                record.write_text(json.dumps({"port": broker.port}))
        found = json.loads(record.read_text())
        if "error" in found:
            cls.error = found["error"]
            raise RuntimeError(cls.error)
        return KafkaBroker.on_port(found["port"])

    @classmethod
    def stop(cls) -> None:
        broker, cls.broker = cls.broker, None
        if broker is not None and broker.managed and cls.owned:
            broker.stop()
            broker.remove_data()

    @staticmethod
    def stop_shared(directory: Path) -> None:
        """Stop the broker the workers shared (the controller, once every worker is done)."""
        record = directory / "broker.json"
        found = json.loads(record.read_text()) if record.exists() else {}
        if "port" in found:
            broker = KafkaBroker.on_port(found["port"])
            broker.stop()
            broker.remove_data()
        shutil.rmtree(directory, ignore_errors=True)


# -- pytest hooks (active when this module is registered as a plugin) -----------------------------

def pytest_configure(config: pytest.Config) -> None:
    """An xdist controller (``-n N``) names the directory its workers share a broker through
    (the workers inherit the controller's environment)."""
    distributed = getattr(config.option, "numprocesses", None)
    if distributed and not hasattr(config, "workerinput") and not os.environ.get(
            "KAFKA_BOOTSTRAP") and not os.environ.get(SHARED_ENV):
        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="notifier-kafka-")
        config.stash[_SHARED_KEY] = Path(os.environ[SHARED_ENV])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the session broker before the first test, outside any per-test timeout."""
    if session.config.option.collectonly or os.environ.get("KAFKA_BOOTSTRAP"):
        return
    if not any(item.get_closest_marker("kafka") for item in session.items):
        return
    if script_unavailable_reason() is None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _Session.start()  # a failure is reported by the fixture, per test


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _Session.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    shared = config.stash.get(_SHARED_KEY, None)
    if shared is not None:
        del os.environ[SHARED_ENV]
        _Session.stop_shared(shared)


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's broker (KAFKA_BOOTSTRAP, or one started with scripts/kafka.sh)."""
    if not os.environ.get("KAFKA_BOOTSTRAP"):
        require_script("no Kafka broker (set KAFKA_BOOTSTRAP to use an existing one)")
    yield _Session.start()
    _Session.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_topic() -> str:
    """A topic name no other test uses."""
    return f"test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def dedicated_kafka() -> Iterator[KafkaBroker]:
    """A private, freshly formatted broker on its own port: free to stop and restart."""
    require_script("cannot start a dedicated Kafka broker")
    broker = KafkaBroker.on_port(free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        broker.remove_data()


# -- readers ---------------------------------------------------------------------------------------

async def topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        names: list[str] = await admin.list_topics()
        return names
    finally:
        await admin.close()


async def describe_topic(bootstrap: str, topic: str) -> dict[str, Any]:
    """The broker's description of ``topic`` (partitions with their replicas)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        [desc] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert desc["error_code"] == 0, f"topic {topic}: error code {desc['error_code']}"
    return dict(desc)


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    desc = await describe_topic(bootstrap, topic)
    return sorted(p["partition"] for p in desc["partitions"])


async def read_topic(bootstrap: str, topic: str, *, within: float = 30.0,
                     isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Every record in ``topic`` right now, by partition then offset (aiokafka's consumer, no
    group, from the beginning up to the end offsets; with ``isolation_level="read_committed"``
    only committed transactions' records, up to the last stable offsets)."""
    tps = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level=isolation_level)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(within):
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)

            async def behind() -> bool:
                return any([await consumer.position(tp) < end[tp] for tp in tps])

            while await behind():
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def kcat_available() -> bool:
    return shutil.which("kcat") is not None


def kcat_read(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every record in ``topic`` as kcat's JSON envelopes (``-J``): topic, partition, offset,
    key, payload, and headers as a flat [name, value, ...] list."""
    proc = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"],
        capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kcat failed with {proc.returncode}: {proc.stderr[-2000:]}")
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    out.sort(key=lambda r: (r["partition"], r["offset"]))
    return out


# -- events ----------------------------------------------------------------------------------------

CONTAINER = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def make_event(rel_id: str, kind: ChangeKind = ChangeKind.CREATED, *, snapshot: bool = False,
               container: str = CONTAINER, subscription: str = "project-a") -> Event:
    """One CloudEvent for relationship ``rel_id``, shaped as the Relationship Service sends it."""
    deleted = kind is ChangeKind.DELETED
    raw: dict[str, Any] = {
        "id": rel_id, "createdOn": "2024-05-01T10:00:00Z", "isReadOnly": False,
        "isService": False, "isDeleted": deleted,
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": f"a-{rel_id}",
             "createdOn": "2024-05-01T10:00:00Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": f"i-{rel_id}",
             "createdOn": "2024-05-01T10:00:00Z"},
        ],
    }
    if deleted:
        raw["deletedOn"] = "2024-05-02T10:00:00Z"
    rel = Relationship(id=rel_id, created_on=raw["createdOn"], is_deleted=deleted,
                       deleted_on=raw.get("deletedOn"), raw=raw)
    return build_event(subscription=subscription, container_id=container, relationship=rel,
                       kind=kind, snapshot=snapshot, seen_at="2024-06-01T00:00:00Z")
