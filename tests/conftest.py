"""Suite-wide fixtures: the Kafka broker, started once per session (or KAFKA_BOOTSTRAP), and
the event contract checked on every event an in-memory sink accepts."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from notifier.core.events import Event
from notifier.sinks.memory import MemorySink
from tests.contract import problems

pytest_plugins = ["tests.integration.kafka_support", "tests.integration.kafka_secure_support"]

# Hypothesis profiles (the stateful stream tests): the default stays within a CI budget;
# ``--hypothesis-profile=long`` (with ``--timeout=0``) explores far more interleavings.
_STATEFUL = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow],
             "print_blob": True}
# The default is derandomized: CI runs the same examples every time (no flaky runs);
# ``long`` draws new ones at every run.
settings.register_profile("default", max_examples=40, stateful_step_count=30,
                          derandomize=True, **_STATEFUL)
settings.register_profile("quick", max_examples=5, stateful_step_count=15, **_STATEFUL)
settings.register_profile("long", max_examples=2_000, stateful_step_count=60, **_STATEFUL)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def memory_sink_events_keep_the_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every event published to a MemorySink is validated against notifier/schemas.

    Problems are collected, not raised inside the pipeline (where a sink error would be retried
    or logged), and fail the test at teardown.
    """
    broken: list[str] = []
    publish = MemorySink.publish

    async def checked(self: MemorySink, events: Sequence[Event]) -> None:
        for event in events:
            found = problems(event.structured())
            if found:
                broken.append(f"{event.id} ({event.type}): " + "; ".join(found))
        await publish(self, events)

    monkeypatch.setattr(MemorySink, "publish", checked)
    yield
    assert not broken, "events broke the contract:\n" + "\n".join(broken[:20])


def _notifier_children() -> list[int]:
    """This process's children that run ``python -m notifier`` (Linux; none where /proc does not
    list children)."""
    found = []
    for listing in Path("/proc/self/task").glob("*/children"):
        try:
            pids = listing.read_text().split()
        except OSError:
            continue  # the thread ended between the listing and the read
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[1:3] == [b"-m", b"notifier"]:
                found.append(int(pid))
    return found


@pytest.fixture(autouse=True)
def no_notifier_process_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way (a deadline passed on a loaded machine) may not have stopped
    the notifier processes it started: they are killed here, so they neither load the machine
    for the rest of the run nor write into a finished test's files."""
    yield
    for pid in _notifier_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
