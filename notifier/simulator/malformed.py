"""Malformed sync pages on request (``knobs.malformed``), for fault tests of the client.

Only successful ``relationships:sync`` answers are spoiled; which ones is decided by the knobs
``malformed_container`` (one container, or all), ``malformed_rate`` (a share of them) and
``malformed_count`` (at most that many more; None = no limit). The kinds:

* ``truncated_json``: the body is cut in half (not JSON);
* ``missing_field``: ``nextSyncToken`` is left out;
* ``wrong_type``: the first relationship's ``isDeleted`` is the string ``"false"`` (or, on a page
  without relationships, ``moreData`` is);
* ``third_entity``: the first relationship gets a third entity (on a page without relationships,
  an invented one with three entities is added: a client that accepts it invents a change);
* ``huge_page``: not malformed but far larger than usual: up to ``HUGE_PAGE_SIZE`` items in one
  page, ignoring ``page_size`` (the sync page size is undocumented, so clients must cope).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

from notifier.simulator.config import MALFORMED_KINDS, Knobs

__all__ = ["HUGE_PAGE_SIZE", "MALFORMED_KINDS", "choose", "spoil"]

HUGE_PAGE_SIZE = 10_000
INVENTED_PREFIX = "bad0bad0"  # ids of relationships made up by third_entity


def choose(knobs: Knobs, container_id: str, rng: random.Random) -> str | None:
    """The kind to apply to this sync answer, or None; consumes one of ``malformed_count``."""
    kind = knobs.malformed
    if kind is None:
        return None
    target = knobs.malformed_container
    if target is not None and target.lower() != container_id.lower():
        return None
    if knobs.malformed_count is not None and knobs.malformed_count <= 0:
        return None
    if knobs.malformed_rate < 1.0 and rng.random() >= knobs.malformed_rate:
        return None
    if knobs.malformed_count is not None:
        knobs.malformed_count -= 1
    return kind


def _first_relationship(page: dict[str, Any]) -> dict[str, Any] | None:
    for part in ("current", "deleted"):
        data = page[part]["data"]
        if data:
            rel: dict[str, Any] = data[0]
            return rel
    return None


def _invented(rng: random.Random) -> dict[str, Any]:
    rid = INVENTED_PREFIX + str(uuid.UUID(int=rng.getrandbits(128)))[8:]
    entity = {"domain": "autodesk-bim360-issue", "type": "issue", "id": rid,
              "createdOn": "2024-01-01T00:00:00.000Z"}
    return {"id": rid, "createdOn": "2024-01-01T00:00:00.000Z", "isReadOnly": False,
            "isService": False, "isDeleted": False, "entities": [entity, entity]}


def spoil(page: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """The response body for ``page`` spoiled as ``kind`` (not ``huge_page``, see the module)."""
    if kind == "truncated_json":
        raw = orjson.dumps(page)
        return raw[: max(1, len(raw) // 2)]
    if kind == "missing_field":
        del page["nextSyncToken"]
    elif kind == "wrong_type":
        rel = _first_relationship(page)
        if rel is None:
            page["moreData"] = "false"
        else:
            rel["isDeleted"] = "false"
    elif kind == "third_entity":
        rel = _first_relationship(page)
        if rel is None:
            rel = _invented(rng)
            page["current"]["data"].append(rel)
        rel["entities"] = [*rel["entities"], dict(rel["entities"][0])]
    else:
        raise ValueError(f"not a spoiling kind: {kind!r}")
    return orjson.dumps(page)
