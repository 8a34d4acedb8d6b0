"""Create (PUT relationships) and delete (relationships:delete), sections 9 and 10.

Choices where the docs are silent (open questions 11-13):

* PUT: an item whose entity pair already has a live relationship returns that relationship
  (no new one) unless the item asks for a different id, which is a conflict. An id already in
  use, or the same pair given two ids in one request, is a conflict. Conflicts answer 409 with
  ``{"success": [...created...], "conflict": [{"id", "actual"}]}``; the non-conflicting items
  are created. One entity may be related to at most 20 others per call (400 otherwise). The
  pair must be allowed by ``utility/relationships:writable`` (400 otherwise).
* delete: ids unknown to the container are ignored; deleting an already deleted relationship
  is idempotent (it is listed again); a read-only relationship refuses the whole call (403).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from notifier.simulator import bodies, catalog
from notifier.simulator.bodies import bad_field, bad_input, field_error
from notifier.simulator.ids import fmt_uuid
from notifier.simulator.ids import parse_uuid as _parse_uuid
from notifier.simulator.ids import random_uuid_int as _new_uid
from notifier.simulator.model import FLAG_READ_ONLY, Container, Entity, make_entity
from notifier.simulator.model import render as _render
from notifier.simulator.state import SimState

MAX_IDS = 50
MAX_CREATE = 1000
MAX_PARTNERS = 20
_LIMITS = (("domain", 128), ("type", 128), ("id", 512))


def id_list(body: Any) -> list[int]:
    """A JSON array of 1-50 relationship UUIDs, as ints; 400 otherwise."""
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_IDS:
        raise bad_field("body", f"Expected a JSON array of 1 to {MAX_IDS} relationship ids.")
    out = []
    for n, item in enumerate(body):
        uid = _parse_uuid(item)
        if uid is None:
            raise bad_field(f"[{n}]", f"The value '{item}' is not a valid relationship id.")
        out.append(uid)
    return out


def _entity(where: str, value: Any, errors: list[dict[str, str]]) -> Entity | None:
    if not isinstance(value, dict):
        errors.append(field_error(where, "Expected an object with domain, type and id."))
        return None
    parts = []
    for name, limit in _LIMITS:
        v = value.get(name)
        if not isinstance(v, str) or not 0 < len(v) <= limit:
            errors.append(field_error(f"{where}.{name}", f"Required, 1 to {limit} characters."))
            return None
        parts.append(v)
    return make_entity(parts[0], parts[1], parts[2])


def _parse_item(where: str, item: Any, errors: list[dict[str, str]]
                ) -> tuple[int | None, Entity, Entity] | None:
    """One relationship to create (problems appended to ``errors``), or None if unusable."""
    if not isinstance(item, dict):
        errors.append(field_error(where, "Expected an object."))
        return None
    uid = None
    if item.get("id") is not None:
        uid = _parse_uuid(item["id"])
        if uid is None:
            errors.append(field_error(f"{where}.id", "Must be a UUID."))
    ents = item.get("entities")
    if not isinstance(ents, list) or len(ents) != 2:
        errors.append(field_error(f"{where}.entities", "Exactly 2 entities are required."))
        return None
    a = _entity(f"{where}.entities[0]", ents[0], errors)
    b = _entity(f"{where}.entities[1]", ents[1], errors)
    if a is None or b is None:
        return None
    if a == b:
        errors.append(field_error(f"{where}.entities", "An entity cannot relate to itself."))
    elif not catalog.is_writable(a[:2], b[:2]):
        errors.append(field_error(
            f"{where}.entities", f"Relating {a[0]}/{a[1]} to {b[0]}/{b[1]} is not allowed."))
    return uid, a, b


def _parse_create(body: Any) -> list[tuple[int | None, Entity, Entity]]:
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_CREATE:
        raise bad_field("body", f"Expected a JSON array of 1 to {MAX_CREATE} relationships.")
    errors: list[dict[str, str]] = []
    items = [parsed for n, item in enumerate(body)
             if (parsed := _parse_item(f"[{n}]", item, errors)) is not None]
    partners = Counter(e for _, a, b in items for e in (a, b))
    for entity, count in partners.items():
        if count > MAX_PARTNERS:
            errors.append(field_error(
                "entities", f"Entity {entity[2]} is related to {count} entities in one call; "
                f"the maximum is {MAX_PARTNERS}."))
    if errors:
        raise bad_input(errors)
    return items


def create(state: SimState, c: Container, body: Any) -> tuple[int, Any]:
    """Apply a PUT body; (200, [created]) or (409, {"success", "conflict"})."""
    items = _parse_create(body)
    success: list[dict[str, Any]] = []
    conflict: list[dict[str, Any]] = []
    in_request: dict[frozenset[Entity], int] = {}
    for uid, a, b in items:
        pair = frozenset((a, b))
        existing = c.by_id.get(uid) if uid is not None else None
        if existing is not None:
            conflict.append({"id": fmt_uuid(uid), "actual": _render(existing)})  # type: ignore[arg-type]
            continue
        first = in_request.get(pair)
        if first is not None and uid is not None and uid != first:
            conflict.append({"id": fmt_uuid(uid), "actual": _render(c.by_id[first])})
            continue
        live = c.find_live_pair(a, b)
        if live is not None:
            if uid is not None and uid != live.uid:
                conflict.append({"id": fmt_uuid(uid), "actual": _render(live)})
            else:
                success.append(_render(live))
                in_request[pair] = live.uid
            continue
        new_uid = uid if uid is not None else _new_uid(state.rng)
        while new_uid in c.by_id:
            new_uid = _new_uid(state.rng)
        rel = c.create(a, b, state.timestamp(), 0, new_uid)
        in_request[pair] = rel.uid
        success.append(_render(rel))
    if conflict:
        return 409, {"success": success, "conflict": conflict}
    return 200, success


def delete(state: SimState, c: Container, body: Any) -> list[str]:
    """Apply a relationships:delete body; the ids now deleted."""
    rels = [c.by_id[u] for u in dict.fromkeys(id_list(body)) if u in c.by_id]
    locked = [r for r in rels if r.flags & FLAG_READ_ONLY]
    if locked:
        raise bodies.forbidden(
            f"Relationship {fmt_uuid(locked[0].uid)} is read-only for the caller.")
    when = state.timestamp()
    for rel in rels:
        c.delete(rel, when)
    return [fmt_uuid(r.uid) for r in rels]
