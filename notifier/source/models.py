"""Typed views of the Relationship Service payloads.

Relationships keep what the API sent (``raw``, decoded lazily from a sync page's JSON) so events
can carry it unchanged; the typed fields are what the notifier itself reads. Parsing lives in
``source.parse``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import orjson


class Relationship:
    """One relationship: the fields the notifier reads, and ``raw``, the dict the API sent.

    Built for every relationship of every page, and for most of them (the ones a resync lists
    that the store already knows) only ``id`` is ever read: a sync page's relationships keep
    the JSON text the API sent (``json``) and ``raw`` decodes it on first use. Built with a
    dict (``raw=``), ``json`` is that dict's JSON. Equality and hashing ignore the body, as they
    always have; treat it as immutable.
    """

    __slots__ = ("_json", "_raw", "created_on", "deleted_on", "id", "is_deleted")

    def __init__(self, id: str, created_on: str, is_deleted: bool,
                 deleted_on: str | None, raw: dict[str, Any] | None = None,
                 json: bytes | None = None) -> None:
        if raw is None and json is None:
            raise TypeError("Relationship needs raw or json")
        self.id = id
        self.created_on = created_on
        self.is_deleted = is_deleted
        self.deleted_on = deleted_on
        self._raw = raw
        self._json = json

    @property
    def raw(self) -> dict[str, Any]:
        """The relationship object as the API sent it (decoded once, on first use)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = orjson.loads(self._json)  # type: ignore[arg-type]
        return raw

    @property
    def json(self) -> bytes:
        """``raw`` as JSON: the API's own text for a sync page's relationships, else
        ``orjson.dumps(raw)``."""
        body = self._json
        if body is None:
            body = self._json = orjson.dumps(self._raw)
        return body

    def _key(self) -> tuple[str, str, bool, str | None]:
        return (self.id, self.created_on, self.is_deleted, self.deleted_on)

    def __repr__(self) -> str:
        return (f"Relationship(id={self.id!r}, created_on={self.created_on!r}, "
                f"is_deleted={self.is_deleted!r}, deleted_on={self.deleted_on!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Relationship):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, slots=True)
class SyncPage:
    current: list[Relationship]
    deleted: list[Relationship]
    more_data: bool
    overwrite: bool
    next_sync_token: str
    size_bytes: int = 0


class SyncStatusResult(msgspec.Struct, rename="camel", frozen=True, kw_only=True, gc=False):
    """One token's answer. A msgspec struct named as the API names its fields: an idle pass
    reads one per stream (100,000 of them), decoded straight from the body at C speed
    (``source.parse.parse_sync_status``)."""

    sync_token: str
    reference_id: str | None = None
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
