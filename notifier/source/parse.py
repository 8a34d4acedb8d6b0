"""Validate Relationship Service response bodies into the typed models of ``source.models``.

Every malformed or unexpected payload raises ``ProtocolError`` naming the endpoint, the path
inside the payload and what was wrong (``current.data[3].entities: expected exactly 2 items,
got 3``), never a ``KeyError`` deep inside the caller. This runs on the hot path (pages of 100
relationships), so the checks are hand-written over ``orjson`` output: the common, valid case
costs a few dict lookups and ``type() is`` checks per relationship.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NoReturn

import orjson

from notifier.errors import ProtocolError
from notifier.source.models import (
    Relationship,
    SearchPage,
    SyncPage,
    SyncStatusFailure,
    SyncStatusResponse,
    SyncStatusResult,
)
from notifier.source.parse_sync import decode_sync_page, decode_sync_status

__all__ = [
    "error_detail",
    "loads",
    "parse_relationship",
    "parse_relationship_list",
    "parse_search_page",
    "parse_sync_page",
    "parse_sync_status",
    "sync_page_from_dicts",
]

_MAX_DETAIL = 500
_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _describe(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _fail(endpoint: str, where: str, problem: str) -> NoReturn:
    raise ProtocolError(f"{where}: {problem}" if where else problem, endpoint=endpoint)


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def loads(body: bytes, endpoint: str) -> Any:
    """Decode a JSON body; not JSON (or truncated) is a ``ProtocolError``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, never the content.
        raise ProtocolError(f"response is not valid JSON ({exc})", endpoint=endpoint) from None


def _object(value: Any, endpoint: str, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        _fail(endpoint, where, f"expected an object, got {_describe(value)}")
    return value


def _array(value: Any, endpoint: str, where: str) -> list[Any]:
    if type(value) is not list:
        _fail(endpoint, where, f"expected an array, got {_describe(value)}")
    return value


def _field(obj: dict[str, Any], key: str, kind: type, endpoint: str, where: str) -> Any:
    """``obj[key]``, which must be present and of exactly ``kind`` (bool is not int)."""
    try:
        value = obj[key]
    except KeyError:
        _fail(endpoint, where, f"missing field {key!r}")
    if type(value) is not kind:
        _fail(endpoint, _path(where, key), f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type, endpoint: str, where: str) -> Any:
    """``obj.get(key)``: absent or null gives None, anything else must be of ``kind``."""
    value = obj.get(key)
    if value is not None and type(value) is not kind:
        expected = f"expected {_TYPE_NAMES[kind]} or null"
        _fail(endpoint, _path(where, key), f"{expected}, got {_describe(value)}")
    return value


_REQUIRED = itemgetter("id", "createdOn", "isDeleted", "entities")
_ENTITY = itemgetter("domain", "type", "id")


def _relationship(item: Any, endpoint: str, where: str, index: int | None = None
                  ) -> Relationship:
    """``item`` as a Relationship; ``where[index]`` names it in an error (the path is built
    only then: this runs for every relationship of every page)."""
    # Fast path, inlined: required fields with the right types, two well-formed entities
    # (the required fields read by one C call each; a missing one takes the slow path).
    if type(item) is dict:
        try:
            rid, created_on, is_deleted, entities = _REQUIRED(item)
        except KeyError:
            entities = None
        get = item.get
        deleted_on = get("deletedOn")
        read_only = get("isReadOnly")
        service = get("isService")
        if (
            type(entities) is list
            and len(entities) == 2
            and type(rid) is str
            and rid
            and type(created_on) is str
            and type(is_deleted) is bool
            and (deleted_on is None or type(deleted_on) is str)
            and (read_only is None or type(read_only) is bool)
            and (service is None or type(service) is bool)
        ):
            first, second = entities
            if type(first) is dict and type(second) is dict:
                try:
                    domain1, type1, id1 = _ENTITY(first)
                    domain2, type2, id2 = _ENTITY(second)
                except KeyError:
                    domain1 = None
                created1, created2 = first.get("createdOn"), second.get("createdOn")
                if (
                    type(domain1) is str and type(type1) is str and type(id1) is str
                    and type(domain2) is str and type(type2) is str and type(id2) is str
                    and (created1 is None or type(created1) is str)
                    and (created2 is None or type(created2) is str)
                ):
                    return Relationship(rid, created_on, is_deleted, deleted_on, item)
    _explain_relationship(item, endpoint, where if index is None else f"{where}[{index}]")


def _explain_relationship(item: Any, endpoint: str, where: str) -> NoReturn:
    """Slow path: find the first problem and raise it with its path."""
    item = _object(item, endpoint, where)
    rid = _field(item, "id", str, endpoint, where)
    if not rid:
        _fail(endpoint, _path(where, "id"), "expected a non-empty string")
    _field(item, "createdOn", str, endpoint, where)
    _field(item, "isDeleted", bool, endpoint, where)
    _optional(item, "deletedOn", str, endpoint, where)
    _optional(item, "isReadOnly", bool, endpoint, where)
    _optional(item, "isService", bool, endpoint, where)
    entities = _field(item, "entities", list, endpoint, where)
    ents_at = _path(where, "entities")
    if len(entities) != 2:
        _fail(endpoint, ents_at, f"expected exactly 2 items, got {len(entities)}")
    for index, entity in enumerate(entities):
        at = f"{ents_at}[{index}]"
        entity = _object(entity, endpoint, at)
        for key in ("domain", "type", "id"):
            _field(entity, key, str, endpoint, at)
        _optional(entity, "createdOn", str, endpoint, at)
    _fail(endpoint, where, "invalid relationship")  # pragma: no cover - fast path disagreed


def _relationships(value: Any, endpoint: str, where: str) -> list[Relationship]:
    items = _array(value, endpoint, where)
    return [_relationship(item, endpoint, where, i) for i, item in enumerate(items)]


def parse_relationship(body: bytes, endpoint: str = "get") -> Relationship:
    """One relationship object (get by id)."""
    return _relationship(loads(body, endpoint), endpoint, "")


def parse_relationship_list(body: bytes, endpoint: str = "batch") -> list[Relationship]:
    """A bare JSON array of relationships (batch)."""
    data = loads(body, endpoint)
    if type(data) is not list:
        _fail(endpoint, "", f"expected an array, got {_describe(data)}")
    return [_relationship(item, endpoint, "", i) for i, item in enumerate(data)]


def parse_sync_page(body: bytes, endpoint: str = "sync") -> SyncPage:
    """``relationships:sync``: ``current.data``, ``deleted.data``, moreData, overwrite, token.

    The fast path (``source.parse_sync``) takes every page it can; the rest, malformed ones
    included, are parsed here, which names the problem."""
    fast = decode_sync_page(body)
    if fast is not None:
        return fast
    return sync_page_from_dicts(body, endpoint)


def sync_page_from_dicts(body: bytes, endpoint: str = "sync") -> SyncPage:
    """``parse_sync_page`` without its fast path: every relationship keeps its decoded dict."""
    data = _object(loads(body, endpoint), endpoint, "")
    current = _field(data, "current", dict, endpoint, "")
    deleted = _field(data, "deleted", dict, endpoint, "")
    current_rels = _relationships(_field(current, "data", list, endpoint, "current"),
                                  endpoint, "current.data")
    deleted_rels = _relationships(_field(deleted, "data", list, endpoint, "deleted"),
                                  endpoint, "deleted.data")
    return SyncPage(
        current=current_rels,
        deleted=deleted_rels,
        more_data=_field(data, "moreData", bool, endpoint, ""),
        overwrite=_field(data, "overwrite", bool, endpoint, ""),
        next_sync_token=_field(data, "nextSyncToken", str, endpoint, ""),
        size_bytes=len(body),
    )


def parse_sync_status(body: bytes, endpoint: str = "syncStatus") -> SyncStatusResponse:
    """``relationships:syncStatus``: one result per valid token, per-token ``errors``."""
    fast = decode_sync_status(body)  # every container check: the usual answer at C speed
    if fast is not None:
        return fast
    data = _object(loads(body, endpoint), endpoint, "")
    results: list[SyncStatusResult] = []
    for i, item in enumerate(_field(data, "results", list, endpoint, "")):
        at = f"results[{i}]"  # finds the problem and names it
        item = _object(item, endpoint, at)
        results.append(SyncStatusResult(
            sync_token=_field(item, "syncToken", str, endpoint, at),
            reference_id=_optional(item, "referenceId", str, endpoint, at),
            more_data=_field(item, "moreData", bool, endpoint, at),
            overwrite=_field(item, "overwrite", bool, endpoint, at),
        ))
    failures: list[SyncStatusFailure] = []
    raw_errors = _optional(data, "errors", list, endpoint, "") or []
    for i, item in enumerate(raw_errors):
        at = f"errors[{i}]"
        item = _object(item, endpoint, at)
        # An error report is kept even when sparse: losing which token failed would be worse.
        failures.append(SyncStatusFailure(
            sync_token=_optional(item, "syncToken", str, endpoint, at),
            reference_id=_optional(item, "referenceId", str, endpoint, at),
            type=_optional(item, "type", str, endpoint, at) or "",
            title=_optional(item, "title", str, endpoint, at) or "",
            detail=_with_field_details(_optional(item, "detail", str, endpoint, at) or "",
                                       item.get("errors")),
        ))
    return SyncStatusResponse(results=results, errors=failures)


def _with_field_details(detail: str, field_errors: Any) -> str:
    """The top-level ``detail`` plus the per-field ones (``errors[].detail``), which say why."""
    if type(field_errors) is not list:
        return detail
    extra = [e["detail"] for e in field_errors
             if type(e) is dict and type(e.get("detail")) is str and e["detail"]]
    if not extra:
        return detail
    joined = "; ".join(extra)
    return f"{detail} ({joined})" if detail else joined


def parse_search_page(body: bytes, endpoint: str = "search") -> SearchPage:
    """``relationships:search`` and ``relationships:intersect``: ``page`` + ``relationships``."""
    data = _object(loads(body, endpoint), endpoint, "")
    page = _field(data, "page", dict, endpoint, "")
    return SearchPage(
        relationships=_relationships(_field(data, "relationships", list, endpoint, ""),
                                     endpoint, "relationships"),
        continuation_token=_optional(page, "continuationToken", str, endpoint, "page"),
        sync_token=_optional(page, "syncToken", str, endpoint, "page"),
    )


def error_detail(body: bytes) -> str | None:
    """The human part of an error body, for error messages; None if there is none.

    Service errors carry ``detail`` (and ``title``); gateway errors carry ``developerMessage``;
    the token endpoint carries ``error_description``/``error``. Never raises.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    for key in ("detail", "developerMessage", "error_description", "title", "userMessage", "error"):
        value = data.get(key)
        if type(value) is str and value:
            if key == "detail":
                value = _with_field_details(value, data.get("errors"))
            return value[:_MAX_DETAIL]
    return None
