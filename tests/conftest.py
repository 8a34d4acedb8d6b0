"""Suite-wide fixtures: the Kafka broker, started once per session (or KAFKA_BOOTSTRAP), and
the event contract checked on every event an in-memory sink accepts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
