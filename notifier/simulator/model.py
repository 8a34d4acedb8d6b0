"""The in-memory data of one container: relationships, the change log and its indexes.

Memory matters (a benchmark holds a million relationships in one container), so a relationship
is a ``__slots__`` object holding its id as a 128-bit int, two shared entity tuples and a few
numbers; timestamps and JSON are produced only when a page is rendered.

The change log is a list of relationships: the entry at sequence number ``s`` (1-based, entry
``log[s - 1]``) is the creation of ``rel`` when ``rel.cseq == s`` and its deletion when
``rel.dseq == s``. Per-domain "last change" sequence numbers make "has anything matching these
domains changed after seq W?" a dictionary lookup.
"""

from __future__ import annotations

import contextlib
import gc
import random
import sys
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from notifier.simulator import catalog
from notifier.simulator.ids import fmt_uuid, random_uuid_int

Entity = tuple[str, str, str]
"""(domain, type, id); domain and type strings are interned and shared."""

FLAG_READ_ONLY = 1
FLAG_SERVICE = 2
_ENTITY_EPOCH = 1704067200.0  # 2024-01-01T00:00:00Z
_REUSE_ENTITY = 0.8  # about 5 relationships per entity on average


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many long-lived objects (no cycles are made).

    Otherwise every few hundred thousand survivors trigger a full collection that walks all
    objects, which makes building a million relationships quadratic-ish.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def fmt_time(ts: float) -> str:
    """ISO 8601 in UTC with microseconds, as the live service writes it."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


@lru_cache(maxsize=1 << 16)
def entity_created_on(entity_id: str) -> str:
    """A stable creation time per entity id (the field's meaning is undocumented)."""
    return fmt_time(_ENTITY_EPOCH + zlib.crc32(entity_id.encode()) % (365 * 86400))


def make_entity(domain: str, etype: str, entity_id: str) -> Entity:
    return (sys.intern(domain), sys.intern(etype), entity_id)


class Rel:
    """One relationship. ``dseq``/``deleted`` are 0/None while it is alive."""

    __slots__ = ("a", "b", "created", "cseq", "deleted", "dseq", "flags", "uid")

    def __init__(self, uid: int, cseq: int, created: float, flags: int, a: Entity,
                 b: Entity) -> None:
        self.uid = uid
        self.cseq = cseq
        self.dseq = 0
        self.created = created
        self.deleted: float | None = None
        self.flags = flags
        self.a = a
        self.b = b

    @property
    def id(self) -> str:
        return fmt_uuid(self.uid)

    def alive_at(self, seq: int) -> bool:
        return self.cseq <= seq and (self.dseq == 0 or self.dseq > seq)


def _entity_json(e: Entity) -> dict[str, str]:
    return {"domain": e[0], "type": e[1], "id": e[2], "createdOn": entity_created_on(e[2])}


def render(rel: Rel, view: str = "now") -> dict[str, Any]:
    """The documented Relationship object.

    ``view``: "now" = its current state; "alive" = as a live relationship (snapshot pages and
    ``current`` of sync, which describe it as of an earlier watermark); "deleted" = as deleted.
    """
    deleted = rel.dseq != 0 if view == "now" else view == "deleted"
    out: dict[str, Any] = {
        "id": fmt_uuid(rel.uid),
        "createdOn": fmt_time(rel.created),
        "isReadOnly": bool(rel.flags & FLAG_READ_ONLY),
        "isService": bool(rel.flags & FLAG_SERVICE),
        "isDeleted": deleted,
    }
    if deleted:
        out["deletedOn"] = fmt_time(rel.deleted if rel.deleted is not None else rel.created)
    out["entities"] = [_entity_json(rel.a), _entity_json(rel.b)]
    return out


class Container:
    """Relationships of one container plus the append-only change log and indexes."""

    def __init__(self, container_id: str) -> None:
        self.id = container_id
        self.log: list[Rel] = []
        self.by_id: dict[int, Rel] = {}
        self._by_entity: dict[Entity, list[Rel]] | None = None
        self.last_by_domain: dict[str, int] = {}
        self.horizon = 0
        self.live = 0
        self.pool: dict[tuple[str, str], list[Entity]] = {}
        # syncStatus memo for fine-grained queries: key -> [lo, hi, last matching seq in (lo, hi]]
        self.status_memo: dict[str, list[int]] = {}

    @property
    def by_entity(self) -> dict[Entity, list[Rel]]:
        """Relationships per entity, in creation order; built on first use (memory)."""
        if self._by_entity is None:
            index: dict[Entity, list[Rel]] = {}
            with no_gc():
                for pos, rel in enumerate(self.log):
                    if rel.cseq == pos + 1:
                        for entity in (rel.a, rel.b):
                            rels = index.get(entity)
                            if rels is None:
                                index[entity] = [rel]
                            else:
                                rels.append(rel)
            self._by_entity = index
        return self._by_entity

    @property
    def seq(self) -> int:
        return len(self.log)

    def is_create(self, pos: int) -> bool:
        """Whether log entry ``pos`` (0-based) is a creation."""
        return self.log[pos].cseq == pos + 1

    def _touch(self, rel: Rel, seq: int) -> None:
        self.last_by_domain[rel.a[0]] = seq
        self.last_by_domain[rel.b[0]] = seq

    def create(self, a: Entity, b: Entity, created: float, flags: int = 0,
               uid: int | None = None, rng: random.Random | None = None) -> Rel:
        if uid is None:
            uid = random_uuid_int(rng or random.Random())
        if uid in self.by_id:
            raise KeyError(fmt_uuid(uid))
        return self.append_new(uid, created, flags, a, b)

    def append_new(self, uid: int, created: float, flags: int, a: Entity, b: Entity) -> Rel:
        """Log the creation of a relationship whose id is known to be unused."""
        seq = len(self.log) + 1
        rel = Rel(uid, seq, created, flags, a, b)
        self.log.append(rel)
        self.by_id[uid] = rel
        index = self._by_entity
        if index is not None:
            for entity in (a, b):
                rels = index.get(entity)
                if rels is None:
                    index[entity] = [rel]
                else:
                    rels.append(rel)
        self.live += 1
        self.last_by_domain[a[0]] = seq
        self.last_by_domain[b[0]] = seq
        return rel

    def delete(self, rel: Rel, when: float) -> bool:
        """Soft-delete; False if it already was deleted."""
        if rel.dseq:
            return False
        self.log.append(rel)
        rel.dseq = len(self.log)
        rel.deleted = when
        self.live -= 1
        self._touch(rel, rel.dseq)
        return True

    def find_live_pair(self, a: Entity, b: Entity) -> Rel | None:
        for rel in self.by_entity.get(a, ()):
            if not rel.dseq and (rel.b == b or rel.a == b):
                return rel
        return None

    def random_entity(self, kind: tuple[str, str], rng: random.Random) -> Entity:
        """An entity for generated data: often one that already has relationships."""
        pool = self.pool.get(kind)
        if pool is None:
            pool = self.pool[kind] = []
        else:
            r = rng.random()
            if r < _REUSE_ENTITY:
                return pool[int(r / _REUSE_ENTITY * len(pool))]
        entity = (kind[0], kind[1], catalog.new_entity_id(kind, rng))
        pool.append(entity)
        return entity

    def random_live(self, rng: random.Random) -> Rel | None:
        """A random live relationship (rejection sampling, then a scan)."""
        if not self.live:
            return None
        n = len(self.log)
        for _ in range(64):
            rel = self.log[rng.randrange(n)]
            if not rel.dseq:
                return rel
        start = rng.randrange(n)
        for i in range(n):
            rel = self.log[(start + i) % n]
            if not rel.dseq:
                return rel
        return None

    def ground_truth(self, since: int = 0) -> dict[str, Any]:
        changes = []
        for pos in range(max(0, since), len(self.log)):
            rel = self.log[pos]
            created = rel.cseq == pos + 1
            changes.append({
                "seq": pos + 1,
                "kind": "created" if created else "deleted",
                "id": fmt_uuid(rel.uid),
                "at": fmt_time(rel.created if created or rel.deleted is None else rel.deleted),
            })
        live = {fmt_uuid(r.uid) for r in self.by_id.values() if not r.dseq}
        return {"changes": changes, "live": live, "seq": self.seq, "horizon": self.horizon}
