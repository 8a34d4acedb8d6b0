"""Hub discovery while the service runs: one ``HubWatcher`` per hub subscription.

Every ``discover_every`` the watcher reads the hub's project list (``ProjectsClient``, on the
credential's Data Management budget), keeps the projects its rules include, and hands what
changed (added, retired, renamed; ``core.projects.diff``) to ``apply``, which turns projects
into streams of the credential's scheduler. A discovery that fails (403, 429 beyond the retries,
5xx, malformed page, credential trouble) changes nothing: the last known list stays, and the
next attempt comes after a growing backoff capped at ``discover_every``; so does one whose
changes could not be stored (a failing state store: applying them again is harmless). The last
known list survives restarts through the state store (the hub subscription's streams not
orphaned), so a discovery failing at start-up does not stop the projects found before.

``HubStatus`` is what ``notifier status`` and the metrics show per hub subscription; the
running service writes all of them to ``<state.path>.hubs.json`` after every discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from notifier.config import SubscriptionConfig
from notifier.core.projects import Changes, Project, diff, watched
from notifier.core.schedule import quarantine_delay
from notifier.discovery import rules_of
from notifier.errors import (
    CredentialError,
    ForbiddenError,
    NotFoundError,
    NotifierError,
    PartitionLostError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    StateError,
    TransportError,
    UnauthorizedError,
)
from notifier.hub_metrics import HubMetrics
from notifier.source.projects import ProjectsClient

log = logging.getLogger(__name__)

RETRY_INITIAL = 30.0  # first retry after a failed discovery; doubles up to discover_every
STARTUP_TIMEOUT = 60.0  # the first discovery may hold the start this long, then runs on
_OUTCOMES: tuple[tuple[type[NotifierError], str], ...] = (
    (ForbiddenError, "forbidden"), (NotFoundError, "not_found"),
    (UnauthorizedError, "unauthorized"), (RateLimitedError, "rate_limited"),
    (ServerError, "server_error"), (TransportError, "transport_error"),
    (ProtocolError, "protocol_error"), (CredentialError, "credential"),
    (StateError, "state_store"),
)


def status_path(state_path: Path) -> Path:
    """Where the running service leaves the hub statuses for ``notifier status``."""
    return state_path.with_name(state_path.name + ".hubs.json")


@dataclass(slots=True)
class HubStatus:
    subscription: str
    hub_id: str
    credential: str
    listed: int = 0  # projects in the last successful listing
    watched: int = 0  # of them kept by include/exclude (= streams)
    added: int = 0  # since start
    retired: int = 0  # since start
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Apply = Callable[["HubWatcher", Changes], Awaitable[None]]


class HubWatcher:
    """Reads one hub subscription's project list now and then; reports what changed."""

    def __init__(self, sub: SubscriptionConfig, client: ProjectsClient, apply: Apply, *,
                 metrics: HubMetrics, clock: Callable[[], float] = time.time,
                 retry_initial: float = RETRY_INITIAL) -> None:
        assert sub.hub_id is not None
        self.sub = sub
        self._client = client
        self._apply = apply
        self._metrics = metrics
        self._clock = clock
        self._retry_initial = min(retry_initial, sub.discover_every)
        self._rules = rules_of(sub)
        self.known: dict[str, Project] = {}
        self.due_now = False  # the first discovery runs as soon as ``run`` starts
        self.status = HubStatus(sub.name, sub.hub_id, sub.credential_names[0])
        metrics.configured(sub.name)

    def seed(self, container_ids: Iterable[str]) -> list[Project]:
        """The last known list (from the store, names unknown until the next discovery)."""
        for cid in container_ids:
            self.known.setdefault(cid, Project("b." + cid, ""))
        self.status.watched = len(self.known)
        return list(self.known.values())

    async def discover(self, give_up_after: float | None = None) -> bool:
        """Read the list once and apply the changes; False (list kept) if that failed."""
        self.status.last_attempt_at = self._clock()
        try:
            async with asyncio.timeout(give_up_after):
                projects = await self._client.projects(self.status.hub_id)
        except (NotifierError, TimeoutError) as exc:
            self._failed(exc)
            return False
        after = watched(projects, self._rules)
        changes = diff(self.known, after)
        try:
            await self._apply(self, changes)
        except (StateError, PartitionLostError) as exc:  # the list stays: applied next time
            self._failed(exc)
            return False
        self.known = after
        st = self.status
        now = self._clock()
        if st.consecutive_failures:
            log.info("hub subscription %s: discovery works again after %d failures",
                     self.sub.name, st.consecutive_failures)
        st.listed, st.watched = len(projects), len(after)
        st.added += len(changes.added)
        st.retired += len(changes.retired)
        st.last_success_at, st.last_error, st.consecutive_failures = now, None, 0
        self._metrics.discovered(self.sub.name, listed=len(projects), watched=len(after),
                                 added=len(changes.added), retired=len(changes.retired), at=now)
        if changes.added or changes.retired:
            log.info("hub subscription %s: %d projects watched (%d added, %d retired)",
                     self.sub.name, len(after), len(changes.added), len(changes.retired))
        return True

    def _failed(self, exc: BaseException) -> None:
        st = self.status
        st.consecutive_failures += 1
        st.last_error = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        outcome = next((name for kind, name in _OUTCOMES if isinstance(exc, kind)), "error")
        self._metrics.discovery_failed(self.sub.name, outcome, st.consecutive_failures)
        log.warning("hub subscription %s: discovery of hub %s failed (%s), keeping the last "
                    "known %d projects; retry in %.0fs", self.sub.name, st.hub_id, st.last_error,
                    len(self.known), self.next_delay())

    def next_delay(self) -> float:
        """``discover_every``, or a growing backoff after failures (capped at it)."""
        every = self.sub.discover_every
        if not self.status.consecutive_failures:
            return every
        return quarantine_delay(self.status.consecutive_failures, self._retry_initial, every)

    async def run(self, stop: asyncio.Event, on_done: Callable[[], None]) -> None:
        """Discover every ``next_delay()`` until ``stop``; ``on_done`` after each attempt."""
        while not stop.is_set():
            delay, self.due_now = (0.0 if self.due_now else self.next_delay()), False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await self.discover()
            except Exception:  # a bug here must not stop the polling of known projects
                log.exception("hub subscription %s: discovery crashed", self.sub.name)
            on_done()


def write_statuses(path: Path, statuses: Iterable[HubStatus]) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps([s.to_json() for s in statuses], option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def read_statuses(path: Path) -> list[dict[str, Any]]:
    """The statuses the running service left (empty if none or unreadable)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
