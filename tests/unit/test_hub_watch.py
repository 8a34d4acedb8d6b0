"""HubWatcher without HTTP: retry delays, the kept list on failure, the status file."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from notifier.config import config_from_data
from notifier.core.projects import Changes, Project
from notifier.errors import ForbiddenError, ServerError, StateError
from notifier.hub_watch import HubWatcher, read_statuses, status_path, write_statuses
from notifier.metrics import Metrics

HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
GUID = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def sub(**extra: object):
    data = {"credentials": [{"name": "main", "access_token": "t"}],
            "sinks": [{"name": "out", "type": "stdout"}],
            "subscriptions": [{"name": "hub", "credential": "main", "hub_id": HUB,
                               "sinks": ["out"], **extra}]}
    return config_from_data(data, environ={}).subscriptions[0]


class Listing:
    """Answers ``projects`` with a list or raises an error (the HTTP side has its own tests)."""

    def __init__(self) -> None:
        self.answer: list[Project] | Exception = []

    async def projects(self, hub_id: str) -> list[Project]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def watcher(listing: Listing, applied: list[Changes], **extra: object) -> HubWatcher:
    async def apply(w: HubWatcher, changes: Changes) -> None:
        applied.append(changes)

    return HubWatcher(sub(**extra), listing, apply,  # type: ignore[arg-type]
                      metrics=Metrics(CollectorRegistry(), runtime=False).hubs,
                      clock=lambda: 1000.0, retry_initial=30.0)


@pytest.mark.parametrize(
    ("every", "failures", "delay"),
    [(900, 0, 900), (900, 1, 30), (900, 2, 60), (900, 5, 480), (900, 9, 900), (60, 3, 60)],
)
def test_retry_delay_grows_and_caps_at_discover_every(every, failures, delay) -> None:
    w = watcher(Listing(), [], discover_every=every)
    w.status.consecutive_failures = failures
    assert w.next_delay() == delay


async def test_a_failure_keeps_the_last_list() -> None:
    listing, applied = Listing(), []
    w = watcher(listing, applied, projects={"exclude": ["(?i)archive"]})
    listing.answer = [Project(f"b.{GUID}", "Tower"), Project("b." + "1" * 8 + GUID[8:], "Archive")]
    assert await w.discover()
    assert list(w.known) == [GUID]
    assert applied[-1].added == [Project(f"b.{GUID}", "Tower")]
    assert (w.status.listed, w.status.watched, w.status.added) == (2, 1, 1)
    for error in (ServerError("boom", endpoint="projects", status=503),
                  ForbiddenError("no", endpoint="projects", status=403)):
        listing.answer = error
        assert not await w.discover()
        assert list(w.known) == [GUID]
    assert len(applied) == 1
    assert w.status.consecutive_failures == 2
    assert w.status.last_error == "projects: no (HTTP 403)"
    listing.answer = []
    assert await w.discover()
    assert applied[-1].retired == [GUID]
    assert (w.status.consecutive_failures, w.status.last_error, w.status.retired) == (0, None, 1)


def test_status_file_round_trip(tmp_path: Path) -> None:
    path = status_path(tmp_path / "state.db")
    assert path.name == "state.db.hubs.json"
    assert read_statuses(path) == []
    w = watcher(Listing(), [])
    write_statuses(path, [w.status])
    assert read_statuses(path) == [w.status.to_json()]
    path.write_text("{not json")
    assert read_statuses(path) == []


async def test_changes_the_store_could_not_take_are_retried_with_backoff() -> None:
    """A failing state store while applying a discovery: counted as a failed discovery (retried
    after the backoff, not after discover_every), the list kept, the same changes next time."""
    listing, applied = Listing(), []
    failures = [StateError("state store: prune failed: database is locked", kind="busy")]

    async def apply(w: HubWatcher, changes: Changes) -> None:
        applied.append(changes)
        if failures:
            raise failures.pop()

    metrics = Metrics(CollectorRegistry(), runtime=False)
    w = HubWatcher(sub(discover_every=900), listing, apply,  # type: ignore[arg-type]
                   metrics=metrics.hubs, clock=lambda: 1000.0, retry_initial=30.0)
    listing.answer = [Project(f"b.{GUID}", "Tower")]
    assert not await w.discover()
    assert w.known == {}
    assert w.status.consecutive_failures == 1
    assert w.next_delay() == 30
    assert metrics.registry.get_sample_value(
        "notifier_hub_discoveries_total", {"subscription": "hub", "outcome": "state_store"}) == 1
    assert await w.discover()
    assert applied[0] == applied[1]
    assert list(w.known) == [GUID]
    assert w.status.added == 1
    assert w.next_delay() == 900
