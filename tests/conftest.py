"""Suite-wide fixtures: the Kafka broker, started once per session (or KAFKA_BOOTSTRAP), and
the event contract checked on every event an in-memory sink accepts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from notifier.core.events import Event
from notifier.sinks.memory import MemorySink
from tests.contract import problems

pytest_plugins = ["tests.integration.kafka_support", "tests.integration.kafka_secure_support"]


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
