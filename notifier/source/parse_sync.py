"""The fast paths of ``relationships:sync`` pages and ``syncStatus`` answers, decoded by msgspec.

A resync lists every relationship of a container, and for nearly all of them (the ones the
store already knows) only the id is ever read. Building each one's dict and freeing it again
was most of a large overwrite's event-loop time, so a page is decoded twice at C speed instead:
once into typed structs, which check every field the notifier relies on (the rules of
``source.parse``), and once into the JSON text of each relationship (``msgspec.Raw``), which
``Relationship.raw`` decodes only when an event needs it. A page with whitespace is made compact
first (``msgspec.json.format``; strings are left as they are), so a kept text is one line of
JSON like orjson's.

Every struct forbids fields it does not list, so every byte of a relationship is validated
(strings as UTF-8, escapes, no number can hide an overflow that orjson would reject). Whatever
this path does not accept, a malformed page, an unknown field, a payload msgspec and orjson
would judge differently, makes ``decode_sync_page`` return None, and ``source.parse`` then parses
the page as before: a page is accepted here only if that parser accepts it too, and every
error names the same path and problem.

A syncStatus answer (one result per token: an idle pass reads 100,000 of them) is decoded
straight into its ``SyncStatusResult`` structs; one with errors, or anything this path does not
accept, goes to ``source.parse`` likewise (``decode_sync_status`` returns None).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from notifier.source.models import (
    Relationship,
    SyncPage,
    SyncStatusResponse,
    SyncStatusResult,
)

__all__ = ["decode_sync_page", "decode_sync_status"]


class _Entity(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    domain: str
    type: str
    id: str
    createdOn: str | None = None


class _Relationship(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: Annotated[str, msgspec.Meta(min_length=1)]
    createdOn: str
    isDeleted: bool
    entities: tuple[_Entity, _Entity]
    deletedOn: str | None = None
    isReadOnly: bool | None = None
    isService: bool | None = None
    permission: None = None  # seen as null in real ACC answers; anything else: the slow path


class _List(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    data: list[_Relationship]


class _Page(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    current: _List
    deleted: _List
    moreData: bool
    overwrite: bool
    nextSyncToken: str


class _RawList(msgspec.Struct, gc=False):
    data: list[msgspec.Raw]


class _RawPage(msgspec.Struct, gc=False):
    current: _RawList
    deleted: _RawList


class _Status(msgspec.Struct, gc=False):
    results: list[SyncStatusResult]
    errors: list[msgspec.Raw] | None = None


_WHITESPACE = (b" ", b"\n", b"\r", b"\t")
_TYPED = msgspec.json.Decoder(_Page)
_RAW = msgspec.json.Decoder(_RawPage)
_STATUS = msgspec.json.Decoder(_Status)


def decode_sync_page(body: bytes) -> SyncPage | None:
    """The page, if this path accepts it (see the module's doc); None: parse it the slow way."""
    text = body
    if any(space in body for space in _WHITESPACE):
        try:  # kept texts are compact, like orjson's: one line each
            text = msgspec.json.format(body, indent=-1)
        except msgspec.DecodeError:
            return None
    try:
        page = _TYPED.decode(text)
        raw = _RAW.decode(text)
    except msgspec.DecodeError:  # ValidationError included
        return None
    return SyncPage(
        current=_relationships(page.current.data, raw.current.data),
        deleted=_relationships(page.deleted.data, raw.deleted.data),
        more_data=page.moreData,
        overwrite=page.overwrite,
        next_sync_token=page.nextSyncToken,
        size_bytes=len(body),
    )


def _relationships(typed: list[_Relationship], raw: list[msgspec.Raw]) -> list[Relationship]:
    new = Relationship
    return [new(t.id, t.createdOn, t.isDeleted, t.deletedOn, None, bytes(r))
            for t, r in zip(typed, raw, strict=True)]


def decode_sync_status(body: bytes) -> SyncStatusResponse | None:
    """The answer, if it has no errors and this path accepts it; None: parse it the slow way."""
    try:
        status = _STATUS.decode(body)
    except msgspec.DecodeError:  # ValidationError included
        return None
    if status.errors:
        return None
    return SyncStatusResponse(results=status.results, errors=[])
