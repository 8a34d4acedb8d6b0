"""Typed views of the Relationship Service payloads.

Relationships keep the dict the API sent (``raw``) so events can carry it unchanged; the typed
fields are what the notifier itself reads. Parsing lives in ``source.parse``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Relationship:
    id: str
    created_on: str
    is_deleted: bool
    deleted_on: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SyncPage:
    current: list[Relationship]
    deleted: list[Relationship]
    more_data: bool
    overwrite: bool
    next_sync_token: str
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SyncStatusResult:
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
