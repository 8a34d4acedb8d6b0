"""Relationship queries: sync domain filters, search criteria and intersect criteria.

A query is kept inside the sync tokens it produces (``to_json``/``from_json``) so that ``sync``
with a token from search or intersect only returns changes matching the original criteria.
Relationships have no direction: every criterion matches either end.

Domain filters (``filters.domains``) match a relationship when at least one of its two
entities is in one of the listed domains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from notifier.simulator.bodies import bad_input, field_error
from notifier.simulator.model import Entity, Rel, make_entity

Spec = tuple[str | None, str | None, str | None]
ANY: Spec = (None, None, None)
MAX_DOMAINS = 20
MAX_ENTITIES = 20


def _spec_match(spec: Spec, e: Entity) -> bool:
    d, t, i = spec
    return (d is None or e[0] == d) and (t is None or e[1] == t) and (i is None or e[2] == i)


class Query:
    """What a token, a search or an intersect selects. Build with the class methods."""

    __slots__ = ("after", "anchor_index", "anchors", "before", "domains", "entities",
                 "include_deleted", "index_domains", "key", "kind", "only_deleted", "spec",
                 "with_spec", "withs")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.domains: frozenset[str] = frozenset()
        self.spec: Spec = ANY
        self.with_spec: Spec = ANY
        self.after: float | None = None
        self.before: float | None = None
        self.entities: tuple[Entity, ...] = ()
        self.withs: tuple[Spec, ...] = ()
        self.include_deleted = False
        self.only_deleted = False
        # Entities every match must touch (iterate the entity index instead of the log).
        self.anchors: tuple[Entity, ...] | None = None
        self.anchor_index: dict[Entity, int] = {}
        # Domains every match must touch (None: any); drives the syncStatus shortcut.
        self.index_domains: frozenset[str] | None = None
        self.key = ""

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def everything(cls) -> Query:
        return cls("all")._finish()

    @classmethod
    def for_domains(cls, domains: Iterable[str]) -> Query:
        q = cls("domains")
        q.domains = frozenset(domains)
        q.index_domains = q.domains
        return q._finish()

    @classmethod
    def search(cls, spec: Spec, with_spec: Spec, after: float | None, before: float | None,
               include_deleted: bool, only_deleted: bool) -> Query:
        q = cls("search")
        q.spec, q.with_spec, q.after, q.before = spec, with_spec, after, before
        q.include_deleted, q.only_deleted = include_deleted, only_deleted
        if spec[2] is not None:
            q.anchors = (make_entity(*spec),)  # type: ignore[arg-type]
        elif with_spec[2] is not None:
            q.anchors = (make_entity(*with_spec),)  # type: ignore[arg-type]
        if spec[0] is not None:
            q.index_domains = frozenset({spec[0]})
        elif with_spec[0] is not None:
            q.index_domains = frozenset({with_spec[0]})
        return q._finish()

    @classmethod
    def intersect(cls, entities: Iterable[Entity], withs: Iterable[Spec],
                  include_deleted: bool, only_deleted: bool) -> Query:
        q = cls("intersect")
        q.entities = tuple(dict.fromkeys(entities))
        q.withs = tuple(withs)
        q.include_deleted, q.only_deleted = include_deleted, only_deleted
        q.anchors = q.entities
        q.index_domains = frozenset(e[0] for e in q.entities)
        return q._finish()

    def _finish(self) -> Query:
        if self.anchors is not None:
            self.anchor_index = {e: i for i, e in enumerate(self.anchors)}
        self.key = orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS).decode()
        return self

    # -- (de)serialisation for tokens ---------------------------------------------------------

    def to_json(self) -> Any:
        if self.kind == "all":
            return None
        if self.kind == "domains":
            return {"domains": sorted(self.domains)}
        common = {"inc": self.include_deleted, "only": self.only_deleted}
        if self.kind == "search":
            return {"search": {"spec": list(self.spec), "with": list(self.with_spec),
                               "after": self.after, "before": self.before, **common}}
        return {"intersect": {"entities": [list(e) for e in self.entities],
                              "with": [list(w) for w in self.withs], **common}}

    @classmethod
    def from_json(cls, data: Any) -> Query:
        """Inverse of ``to_json``; ValueError on anything malformed."""
        try:
            if data is None:
                return cls.everything()
            if "domains" in data:
                return cls.for_domains(_strs(data["domains"]))
            if "search" in data:
                s = data["search"]
                return cls.search(_spec(s["spec"]), _spec(s["with"]), _num(s["after"]),
                                  _num(s["before"]), bool(s["inc"]), bool(s["only"]))
            s = data["intersect"]
            ents = [make_entity(*_strs(e)) for e in s["entities"]]
            return cls.intersect(ents, [_spec(w) for w in s["with"]], bool(s["inc"]),
                                 bool(s["only"]))
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"bad query: {exc}") from exc

    # -- matching ------------------------------------------------------------------------------

    def matches(self, rel: Rel) -> bool:
        """Whether the relationship satisfies the entity and date criteria (not deletion)."""
        a, b = rel.a, rel.b
        kind = self.kind
        if kind == "all":
            return True
        if kind == "domains":
            return a[0] in self.domains or b[0] in self.domains
        if kind == "search":
            if self.after is not None and rel.created <= self.after:
                return False
            if self.before is not None and rel.created >= self.before:
                return False
            s, w = self.spec, self.with_spec
            return (_spec_match(s, a) and _spec_match(w, b)) or (
                _spec_match(s, b) and _spec_match(w, a))
        idx = self.anchor_index
        if a in idx and self._with_ok(b):
            return True
        return b in idx and self._with_ok(a)

    def _with_ok(self, other: Entity) -> bool:
        return not self.withs or any(_spec_match(w, other) for w in self.withs)

    def visible_now(self, rel: Rel) -> bool:
        """Search visibility by deletion state: onlyDeleted > includeDeleted > live only."""
        if self.only_deleted:
            return rel.dseq != 0
        return self.include_deleted or rel.dseq == 0


def _strs(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError("expected a list of strings")
    return v


def _spec(v: Any) -> Spec:
    if not isinstance(v, list) or len(v) != 3:
        raise TypeError("expected [domain, type, id]")
    return (v[0], v[1], v[2])


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, int | float):
        return None if v is None else float(v)
    raise TypeError("expected a number")


# -- parsing request input ---------------------------------------------------------------------

def parse_bool(name: str, value: str | None, errors: list[dict[str, str]]) -> bool:
    if value is None:
        return False
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    errors.append(field_error(name, f"The value '{value}' is not valid."))
    return False


def parse_time(name: str, value: str | None, errors: list[dict[str, str]]) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        errors.append(field_error(name, f"The value '{value}' is not a valid ISO 8601 date."))
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _hierarchy(prefix: str, d: str | None, t: str | None, i: str | None,
               errors: list[dict[str, str]]) -> Spec:
    names = ("domain", "type", "id") if not prefix else ("withDomain", "withType", "withId")
    if t is not None and d is None:
        errors.append(field_error(names[1], f"'{names[1]}' requires '{names[0]}'."))
    if i is not None and t is None:
        errors.append(field_error(names[2], f"'{names[2]}' requires '{names[1]}'."))
    for name, v, limit in zip(names, (d, t, i), (128, 128, 512), strict=True):
        if v is not None and not 0 < len(v) <= limit:
            errors.append(field_error(name, f"'{name}' must be 1 to {limit} characters."))
    return (d, t, i)


def search_query(params: Mapping[str, str]) -> Query:
    """Criteria of ``GET relationships:search`` (section 5); raises a 400 ApiError."""
    errors: list[dict[str, str]] = []
    spec = _hierarchy("", params.get("domain"), params.get("type"), params.get("id"), errors)
    with_spec = _hierarchy("with", params.get("withDomain"), params.get("withType"),
                           params.get("withId"), errors)
    after = parse_time("createdAfter", params.get("createdAfter"), errors)
    before = parse_time("createdBefore", params.get("createdBefore"), errors)
    include = parse_bool("includeDeleted", params.get("includeDeleted"), errors)
    only = parse_bool("onlyDeleted", params.get("onlyDeleted"), errors)
    if errors:
        raise bad_input(errors)
    return Query.search(spec, with_spec, after, before, include, only)


def _entity_list(name: str, value: Any, full: bool, errors: list[dict[str, str]]) -> list[Spec]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ENTITIES:
        errors.append(field_error(name, f"'{name}' must be an array of 1 to {MAX_ENTITIES}."))
        return []
    out: list[Spec] = []
    for n, item in enumerate(value):
        where = f"{name}[{n}]"
        if not isinstance(item, dict):
            errors.append(field_error(where, "Expected an object."))
            continue
        d, t, i = (item.get(k) for k in ("domain", "type", "id"))
        if any(v is not None and not isinstance(v, str) for v in (d, t, i)):
            errors.append(field_error(where, "domain, type and id must be strings."))
            continue
        if full and (d is None or t is None or i is None):
            errors.append(field_error(where, "domain, type and id are required."))
            continue
        sub: list[dict[str, str]] = []
        out.append(_hierarchy("", d, t, i, sub))
        errors.extend(field_error(where, e["detail"]) for e in sub)
    return out


def intersect_query(body: Any, params: Mapping[str, str]) -> Query:
    """Criteria of ``POST relationships:intersect`` (section 6); raises a 400 ApiError."""
    errors: list[dict[str, str]] = []
    if isinstance(body, list) and len(body) == 1:
        body = body[0]  # the issue-references tutorial wraps the body in an array
    if not isinstance(body, dict):
        raise bad_input([field_error("body", "Expected a JSON object with 'entities'.")])
    ents = _entity_list("entities", body.get("entities"), True, errors)
    withs_raw = body.get("withEntities")
    withs = [] if withs_raw is None else _entity_list("withEntities", withs_raw, False, errors)
    include = parse_bool("includeDeleted", params.get("includeDeleted"), errors)
    only = parse_bool("onlyDeleted", params.get("onlyDeleted"), errors)
    if errors:
        raise bad_input(errors)
    entities = [make_entity(d, t, i) for d, t, i in ents]  # type: ignore[arg-type]
    return Query.intersect(entities, withs, include, only)


def domains_filter(filters: Any) -> Query:
    """``filters`` of a bootstrap sync: absent/null = everything, else 1-20 domains."""
    if filters is None:
        return Query.everything()
    if not isinstance(filters, dict):
        raise bad_input([field_error("filters", "Expected an object.")])
    domains = filters.get("domains")
    if domains is None:
        return Query.everything()
    if (not isinstance(domains, list) or not 1 <= len(domains) <= MAX_DOMAINS
            or not all(isinstance(d, str) and 0 < len(d) <= 128 for d in domains)):
        raise bad_input([field_error(
            "filters.domains", f"Expected an array of 1 to {MAX_DOMAINS} domain names.")])
    return Query.for_domains(domains)
