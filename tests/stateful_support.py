"""Pieces for the stateful stream tests: the simulator in-process behind the client's interface,
and a store, a sink and a client that can die at any await point.

``SimClient`` answers ``sync`` from the simulator's own protocol code (``syncing.sync``) and
parses the answer with the notifier's real parser, so the syncer sees exactly what it would see
over HTTP. ``Faults`` counts the await points of one drain (each client call, store write and
sink publish, before and after it happens) and raises ``Crash`` at the chosen one: the drain is
abandoned where a SIGKILL would have stopped it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from notifier.core.events import Event
from notifier.errors import BadRequestError
from notifier.metrics import Metrics
from notifier.simulator import SimState, syncing
from notifier.simulator.bodies import ApiError
from notifier.simulator.query import search_query
from notifier.sinks.memory import MemorySink
from notifier.source.models import SearchPage, SyncPage
from notifier.source.parse import parse_search_page, parse_sync_page
from notifier.state.base import Announcement
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import Staging

USER = "stateful-user"
# The container, domains and event types the sync tests (stateful, defects, query filter) share.
C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
ASSET = "autodesk-bim360-asset"
ISSUE = "autodesk-bim360-issue"
CREATED = "com.autodesk.bim360.relationship.created"
DELETED = "com.autodesk.bim360.relationship.deleted"


def quiet_metrics() -> Metrics:
    """Metrics on a private registry (the syncer requires them; nothing reads them here)."""
    return Metrics(CollectorRegistry(), runtime=False)


class Crash(BaseException):
    """Stands for SIGKILL at an await point (a BaseException: nothing may swallow it)."""


class Faults:
    """Counts await points; raises Crash at ``crash_at`` (None: never)."""

    def __init__(self) -> None:
        self.crash_at: int | None = None
        self.count = 0
        self.crashed = False  # a Crash was raised: the store must close as a killed one

    def arm(self, crash_at: int | None) -> None:
        self.crash_at, self.count = crash_at, 0

    def point(self) -> None:
        n, self.count = self.count, self.count + 1
        if n == self.crash_at:
            self.crash_at = None
            self.crashed = True
            raise Crash(f"crash at await point {n}")


class FaultyStore(SqliteStateStore):
    """A real SQLite store whose writes are await points (before and after they happen).

    Closed after a Crash, it loses what a killed process loses: the resync ids the store
    holds in memory are dropped instead of written at close.
    """

    def __init__(self, path: Any, faults: Faults) -> None:
        super().__init__(path)
        self.faults = faults

    async def close(self) -> None:
        if self.faults.crashed:
            self.faults.crashed = False
            self._ids.staging = Staging()  # what SIGKILL loses
        await super().close()

    async def commit_page(self, *args: Any, **kwargs: Any) -> None:
        self.faults.point()
        await super().commit_page(*args, **kwargs)
        self.faults.point()

    async def begin_resync(self, *args: Any, **kwargs: Any) -> None:
        self.faults.point()
        await super().begin_resync(*args, **kwargs)
        self.faults.point()

    async def mark_announced(self, subscription: str, container_id: str,
                             items: Sequence[Announcement]) -> None:
        self.faults.point()
        await super().mark_announced(subscription, container_id, items)
        self.faults.point()


class RecordingSink(MemorySink):
    """Everything it ever accepted, across crashes, as a consumer would have it."""

    def __init__(self, faults: Faults, name: str = "consumer") -> None:
        super().__init__(name)
        self.faults = faults

    async def publish(self, events: Sequence[Event]) -> None:
        self.faults.point()
        await super().publish(events)
        self.faults.point()


class SimClient:
    """The client interface the syncer uses, answered by the simulator in-process."""

    credential_name = "stateful"

    def __init__(self, sim: SimState, faults: Faults) -> None:
        self.sim = sim
        self.faults = faults
        self.calls = 0
        self.script: dict[int, list[Callable[[], object]]] = {}

    def interleave(self, script: Mapping[int, list[Callable[[], object]]]) -> None:
        """Run these actions just before the n-th sync call (1-based) of the next drain."""
        self.calls = 0
        self.script = {k: list(v) for k, v in script.items()}

    def _call(self) -> None:
        """A request begins: this drain's scripted actions for it run, then an await point."""
        self.calls += 1
        for action in self.script.pop(self.calls, []):
            action()
        self.faults.point()

    async def sync(self, container_id: str, token: str | None = None,
                   domains: Sequence[str] | None = None) -> SyncPage:
        self._call()
        body: dict[str, Any] = {}
        if token is not None:
            body["syncToken"] = token
        elif domains:
            body["filters"] = {"domains": list(domains)}
        try:
            answer = syncing.sync(self.sim, self.sim.container(container_id), USER, body)
        except ApiError as err:
            raise BadRequestError(str(err.body.get("detail") or err.body), endpoint="sync",
                                  status=err.status) from None
        page = parse_sync_page(orjson.dumps(answer))
        self.faults.point()
        return page

    async def search(self, container_id: str, query: Mapping[str, str],
                     continuation: str | None = None) -> SearchPage:
        self._call()
        try:
            answer = syncing.query_page(
                self.sim, self.sim.container(container_id), USER, search_query(query),
                syncing.page_limit(self.sim, None), continuation)
        except ApiError as err:
            raise BadRequestError(str(err.body.get("detail") or err.body), endpoint="search",
                                  status=err.status) from None
        page = parse_search_page(orjson.dumps(answer))
        self.faults.point()
        return page
