"""Typed views of the Relationship Service payloads.

Relationships keep the dict the API sent (``raw``) so events can carry it unchanged; the typed
fields are what the notifier itself reads. Parsing lives in ``source.parse``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Relationship(NamedTuple):
    """One relationship: the fields the notifier reads, and ``raw``, the dict the API sent.

    A NamedTuple (immutable, built at C speed: one per relationship of every page). Equality
    and hashing ignore ``raw``, as they always have."""

    id: str
    created_on: str
    is_deleted: bool
    deleted_on: str | None
    raw: dict[str, Any]

    def __repr__(self) -> str:
        return (f"Relationship(id={self.id!r}, created_on={self.created_on!r}, "
                f"is_deleted={self.is_deleted!r}, deleted_on={self.deleted_on!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Relationship):
            return NotImplemented
        return self[:4] == other[:4]

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self[:4])


@dataclass(frozen=True, slots=True)
class SyncPage:
    current: list[Relationship]
    deleted: list[Relationship]
    more_data: bool
    overwrite: bool
    next_sync_token: str
    size_bytes: int = 0


class SyncStatusResult(NamedTuple):
    """One token's answer (a NamedTuple: an idle pass reads one per stream, 100,000 of them)."""

    sync_token: str
    reference_id: str | None
    more_data: bool
    overwrite: bool


@dataclass(frozen=True, slots=True)
class SyncStatusFailure:
    sync_token: str | None
    reference_id: str | None
    type: str
    title: str
    detail: str


@dataclass(frozen=True, slots=True)
class SyncStatusResponse:
    results: list[SyncStatusResult]
    errors: list[SyncStatusFailure]


@dataclass(frozen=True, slots=True)
class SearchPage:
    relationships: list[Relationship]
    continuation_token: str | None
    sync_token: str | None
