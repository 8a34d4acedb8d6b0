"""The simulator's Data Management side: hubs, their projects, who can see them, and faults.

A hub holds projects (``b.<GUID>`` ids, names). Adding a project also adds its Relationship
Service container (the GUID without ``b.``) to the simulated service if it is not there yet, so
a discovered project can be polled at once; removing a project from a hub (deleted, archived,
access removed: the listing cannot tell them apart) leaves the container alone.

Faults for the Data Management endpoints are separate from the Relationship Service knobs:
``next_statuses`` answers the next requests with those statuses (one each), ``always_status``
answers every request with one until cleared, ``latency`` delays each answer, ``rpm`` is the
per-user, per-endpoint limit (50/minute, as the published limits), ``page_size`` the default
``page[limit]``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from notifier.simulator.ids import fmt_uuid, parse_uuid, random_uuid_int
from notifier.simulator.limits import SlidingWindowLimiter
from notifier.simulator.state import SimState

DM_RATE_PER_MINUTE = 50
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200


@dataclass(slots=True)
class SimHub:
    id: str
    name: str
    projects: dict[str, str] = field(default_factory=dict)  # project id -> name, listing order
    hidden_from: set[str] = field(default_factory=set)  # users who get 403 for this hub


@dataclass(slots=True)
class HubKnobs:
    rpm: int = DM_RATE_PER_MINUTE
    page_size: int = DEFAULT_PAGE_SIZE
    latency: float = 0.0
    always_status: int | None = None
    next_statuses: list[int] = field(default_factory=list)

    def validate(self) -> None:
        if self.rpm < 0 or not 1 <= self.page_size <= MAX_PAGE_SIZE or self.latency < 0:
            raise ValueError("rpm >= 0, 1 <= page_size <= 200 and latency >= 0 required")
        for status in [*self.next_statuses, *([self.always_status] if self.always_status else [])]:
            if not 400 <= int(status) <= 599:
                raise ValueError(f"fault statuses must be 4xx or 5xx, got {status}")


@dataclass(slots=True)
class HubStats:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    faults_injected: int = 0
    rate_limited: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "statuses": dict(self.statuses),
                "faults_injected": self.faults_injected, "rate_limited": self.rate_limited}


def project_id(value: str | None, rs: SimState) -> str:
    """``b.<guid>`` from a given id (with or without ``b.``) or a fresh random one."""
    if value is None:
        return "b." + fmt_uuid(random_uuid_int(rs.rng))
    guid = parse_uuid(value[2:] if value[:2].lower() == "b." else value)
    if guid is None:
        raise ValueError(f"project id must be b.<GUID>: {value!r}")
    return "b." + fmt_uuid(guid)


class HubCatalog:
    """Every hub of one simulator, bound to its Relationship Service state."""

    def __init__(self, rs: SimState) -> None:
        self.rs = rs
        self.hubs: dict[str, SimHub] = {}
        self.knobs = HubKnobs()
        self.limiter = SlidingWindowLimiter()
        self.stats = HubStats()
        self._faults: deque[int] = deque()

    # -- hubs and projects ---------------------------------------------------------------------

    def hub(self, hub_id: str) -> SimHub:
        """The hub (KeyError if unknown); ids are case-insensitive."""
        return self.hubs[hub_id.lower()]

    def add_hub(self, hub_id: str | None = None, name: str = "Simulated hub",
                projects: int = 0, relationships: int = 0) -> str:
        hid = project_id(hub_id, self.rs)  # same b.<guid> shape
        if hid in self.hubs:
            raise ValueError(f"hub exists: {hid}")
        self.hubs[hid] = SimHub(hid, name)
        for i in range(projects):
            self.add_project(hid, f"Project {i + 1:04d}", relationships=relationships)
        return hid

    def add_project(self, hub_id: str, name: str, project: str | None = None,
                    relationships: int = 0) -> str:
        """Add a project to a hub (and its container to the service); returns ``b.<guid>``."""
        hub = self.hub(hub_id)
        pid = project_id(project, self.rs)
        if pid in hub.projects:
            raise ValueError(f"project exists in {hub.id}: {pid}")
        hub.projects[pid] = name
        cid = pid[2:]
        if cid not in self.rs.containers:
            self.rs.add_container(cid, relationships)
        return pid

    def remove_projects(self, hub_id: str, ids: list[str]) -> int:
        """Take projects out of a hub's listing; returns how many were there."""
        hub = self.hub(hub_id)
        return sum(hub.projects.pop(project_id(p, self.rs), None) is not None for p in ids)

    def rename_project(self, hub_id: str, project: str, name: str) -> None:
        hub = self.hub(hub_id)
        pid = project_id(project, self.rs)
        if pid not in hub.projects:
            raise KeyError(pid)
        hub.projects[pid] = name

    def set_access(self, hub_id: str, user: str, visible: bool) -> None:
        hub = self.hub(hub_id)
        (hub.hidden_from.discard if visible else hub.hidden_from.add)(user)

    def visible_hubs(self, user: str) -> list[SimHub]:
        return [h for h in self.hubs.values() if user not in h.hidden_from]

    # -- faults --------------------------------------------------------------------------------

    def set_knobs(self, **changes: Any) -> HubKnobs:
        """Change knobs (validated); ``next_statuses`` are queued after the ones pending."""
        names = set(HubKnobs.__dataclass_fields__)
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown hub knobs: {sorted(unknown)}")
        candidate = HubKnobs(**{n: getattr(self.knobs, n) for n in names} | changes)
        candidate.validate()
        self.knobs = candidate
        self._faults.extend(int(s) for s in candidate.next_statuses)
        self.knobs.next_statuses = []
        return self.knobs

    def next_fault(self) -> int | None:
        """The status the next request must get instead of an answer, if any."""
        if self._faults:
            return self._faults.popleft()
        return self.knobs.always_status

    @property
    def pending_faults(self) -> list[int]:
        return list(self._faults)

    def summary(self) -> list[dict[str, Any]]:
        return [{"id": h.id, "name": h.name, "hidden_from": sorted(h.hidden_from),
                 "projects": [{"id": p, "name": n} for p, n in h.projects.items()]}
                for h in self.hubs.values()]
