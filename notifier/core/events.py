"""CloudEvents 1.0 built from relationship changes, with deterministic ids."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import orjson

from notifier.source.models import Relationship

SPEC_VERSION = "1.0"
TYPE_PREFIX = "com.autodesk.bim360.relationship."
# Fixed namespace: changing it changes every event id and breaks consumers' deduplication.
EVENT_ID_NAMESPACE = uuid.UUID("6f1e4f0a-5a8e-4c55-9d0e-8b7e2f6c4a11")


class ChangeKind(StrEnum):
    CREATED = "created"
    DELETED = "deleted"


# The members bound once: on Python 3.11 reading ``ChangeKind.CREATED`` off the class costs
# about a microsecond, and so does hashing a member (``Enum.__hash__`` is Python code), which a
# dict keyed by kind does on every lookup. The hot paths compare with ``is`` instead.
CREATED = ChangeKind.CREATED
DELETED = ChangeKind.DELETED
_NAMESPACE_SHA1 = hashlib.sha1(EVENT_ID_NAMESPACE.bytes)
_CREATED_TYPE = TYPE_PREFIX + CREATED.value
_DELETED_TYPE = TYPE_PREFIX + DELETED.value
_VARIANT = {d: "%x" % (int(d, 16) & 0x3 | 0x8) for d in "0123456789abcdef"}


def event_id(container_id: str, relationship_id: str, kind: ChangeKind) -> str:
    """The same change (container, relationship, kind) always gets the same id.

    ``uuid5(EVENT_ID_NAMESPACE, "{container}/{relationship}/{kind}")``, computed from the SHA-1
    hex digest directly (this runs once per event; the unit tests pin it to ``uuid.uuid5``).
    """
    sha = _NAMESPACE_SHA1.copy()
    suffix = "/created" if kind is CREATED else "/deleted"
    sha.update(f"{container_id}/{relationship_id}{suffix}".encode())
    x = sha.hexdigest()
    # Version 5 in the 13th hex digit, the RFC 4122 variant in the 17th.
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def event_source(container_id: str) -> str:
    return f"/bim360/relationship/v2/containers/{container_id}"


class Event:
    """One CloudEvent; ``data`` is the JSON object of docs/schemas/ (README.md, Events).

    Built once per event on the hot path. An event built from a relationship (``build_event``)
    keeps it and builds ``data`` only when asked: the sinks serialise it with the relationship's
    JSON text as it is (``json_data``), so a sync page's relationships are never decoded into
    dicts just to be encoded again; ``data_head``, the JSON of ``data`` up to the relationship
    (``data_head()``), is the same for every event of a stream, so whoever builds a page's
    events builds it once and hands it to them. Equal events have equal fields and ``data``;
    treat it as immutable."""

    __slots__ = ("_data", "container_id", "data_head", "id", "kind", "project_name",
                 "relationship", "snapshot", "source", "subject", "subscription", "time", "type")

    def __init__(self, id: str, type: str, source: str, subject: str,
                 time: str, kind: ChangeKind, container_id: str, subscription: str,
                 snapshot: bool, data: dict[str, Any] | None = None, *,
                 relationship: Relationship | None = None,
                 project_name: str | None = None, data_head: bytes | None = None) -> None:
        """``data_head``: ``data_head(subscription, container_id, project_name)``, for an event
        built from ``relationship`` (computed when asked for if not given)."""
        if data is None and relationship is None:
            raise TypeError("Event needs data or relationship")
        self.id = id
        self.type = type
        self.source = source
        self.subject = subject
        self.time = time
        self.kind = kind
        self.container_id = container_id
        self.subscription = subscription
        self.snapshot = snapshot
        self._data = data
        self.relationship = relationship
        self.project_name = project_name
        # Only where data_json() is the head and the relationship's text (see there).
        self.data_head = data_head if data is None else None

    @property
    def data(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            assert self.relationship is not None
            data = self._data = _data(self.subscription, self.container_id, self.project_name,
                                      self.relationship.raw)
        return data

    def json_data(self) -> dict[str, Any]:
        """``data`` for ``orjson.dumps``: the relationship as its JSON text (an
        ``orjson.Fragment``) when the event was built from one, so nothing is decoded."""
        if self._data is not None or self.relationship is None:
            return self.data
        return _data(self.subscription, self.container_id, self.project_name,
                     orjson.Fragment(self.relationship.json))

    def relationship_json(self) -> bytes:
        """``data["relationship"]`` as JSON."""
        if self._data is None and self.relationship is not None:
            return self.relationship.json
        return orjson.dumps(self.data["relationship"])

    def _fields(self) -> tuple[Any, ...]:
        return (self.id, self.type, self.source, self.subject, self.time, self.kind,
                self.container_id, self.subscription, self.snapshot, self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # like the tuple it was: data is a dict

    def __repr__(self) -> str:  # without ``data``: a whole relationship
        return (f"Event(id={self.id!r}, type={self.type!r}, subject={self.subject!r}, "
                f"time={self.time!r}, snapshot={self.snapshot!r})")

    def attributes(self) -> dict[str, Any]:
        """Context attributes (everything but ``data``), as in structured mode."""
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
            "snapshot": self.snapshot,
        }

    def structured(self) -> dict[str, Any]:
        """The whole event as one JSON object (structured content mode)."""
        out = self.attributes()
        out["data"] = self.data
        return out

    def structured_for_json(self) -> dict[str, Any]:
        """``structured()`` for ``orjson.dumps``: its ``data`` is ``json_data()``."""
        out = self.attributes()
        out["data"] = self.json_data()
        return out

    def structured_json(self) -> bytes:
        return orjson.dumps(self.structured_for_json())

    def data_json(self) -> bytes:
        """``data`` as JSON. Built from a relationship, it is the stream's constant head
        (``data_head``) and the relationship's text: the bytes ``orjson.dumps`` of
        ``json_data()`` gives, without a dict or a serialisation per event."""
        rel = self.relationship
        if self._data is not None or rel is None:
            return orjson.dumps(self.data)
        head = self.data_head
        if head is None:
            head = self.data_head = data_head(self.subscription, self.container_id,
                                              self.project_name)
        return head + rel.json + b"}"


def build_event(
    *,
    subscription: str,
    container_id: str,
    relationship: Relationship,
    kind: ChangeKind,
    snapshot: bool,
    seen_at: str,
    project_name: str | None = None,
    head: bytes | None = None,
) -> Event:
    """Build the CloudEvent for one change; ``seen_at`` stands in for a missing deletedOn.
    ``project_name`` (hub subscriptions) becomes ``data.projectName``; ``head``: the stream's
    ``data_head``, if the caller has it."""
    if kind is CREATED:
        time, etype = relationship.created_on, _CREATED_TYPE
    else:
        time, etype = relationship.deleted_on or seen_at, _DELETED_TYPE
    rel_id = relationship.id
    return Event(  # positional: the order of Event's fields
        event_id(container_id, rel_id, kind), etype, event_source(container_id), rel_id,
        time, kind, container_id, subscription, snapshot,
        relationship=relationship, project_name=project_name, data_head=head,
    )


def data_head(subscription: str, container_id: str, project_name: str | None) -> bytes:
    """``data``'s JSON up to the relationship's value (``...,"relationship":``), the same for
    every event of a stream: cut from ``orjson.dumps`` of ``data`` with a null relationship,
    the last member, so ``head + relationship JSON + b"}"`` is that dump's bytes."""
    return orjson.dumps(_data(subscription, container_id, project_name, None))[:-len(b"null}")]


def created_events(
    *,
    subscription: str,
    container_id: str,
    relationships: Iterable[Relationship],
    snapshot: bool,
    project_name: str | None = None,
    head: bytes | None = None,
) -> list[Event]:
    """``build_event`` of kind created for each of ``relationships``, in order: the same
    events, built in one loop (the id's hash primed with the container once, the source,
    type and ``data_head`` shared) for the pages whose every new relationship is a creation."""
    if head is None:
        head = data_head(subscription, container_id, project_name)
    base = _NAMESPACE_SHA1.copy()
    base.update(f"{container_id}/".encode())
    copy, variant = base.copy, _VARIANT
    source = event_source(container_id)
    new = Event
    out: list[Event] = []
    append = out.append
    for rel in relationships:
        rel_id = rel.id
        sha = copy()
        sha.update(f"{rel_id}/created".encode())
        x = sha.hexdigest()
        append(new(f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}",
                   _CREATED_TYPE, source, rel_id, rel.created_on, CREATED, container_id,
                   subscription, snapshot, relationship=rel, project_name=project_name,
                   data_head=head))
    return out


def _data(subscription: str, container_id: str, project_name: str | None,
          relationship: Any) -> dict[str, Any]:
    if project_name is None:
        return {"subscription": subscription, "containerId": container_id,
                "relationship": relationship}
    return {"subscription": subscription, "containerId": container_id,
            "projectName": project_name, "relationship": relationship}
