"""The whole simulated service: containers, credentials, knobs, limits and statistics.

Tests drive it directly (``sim.state.create_relationships(...)``); the HTTP control endpoints
under ``/_sim`` call the same methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from notifier.simulator import catalog
from notifier.simulator.auth import AuthState
from notifier.simulator.config import STATIC_TOKEN_USER, Knobs, SimulatorConfig
from notifier.simulator.ids import fmt_uuid, parse_uuid, random_uuid_int
from notifier.simulator.limits import SlidingWindowLimiter, Stats
from notifier.simulator.model import (
    FLAG_READ_ONLY,
    FLAG_SERVICE,
    Container,
    Entity,
    make_entity,
    no_gc,
)
from notifier.simulator.query import Query
from notifier.simulator.tokens import SyncToken, TokenCodec

log = logging.getLogger(__name__)

EntityLike = Entity | Sequence[str] | dict[str, str]
PairLike = tuple[EntityLike, EntityLike] | Sequence[EntityLike]
_SERVICE_SHARE = 0.1
_CREATE_SHARE = 0.7
_HISTORY_SECONDS = 90 * 86400.0


def _entity(value: EntityLike) -> Entity:
    if isinstance(value, dict):
        return make_entity(value["domain"], value["type"], value["id"])
    d, t, i = value
    return make_entity(d, t, i)


class SimState:
    """In-memory model plus the service-wide machinery (auth, rate limit, stats)."""

    def __init__(self, config: SimulatorConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config = config or SimulatorConfig()
        self.knobs: Knobs = config.knobs
        self.knobs.validate()
        self.clock = clock
        self.wall = wall
        self.rng = random.Random(config.seed)
        key = (hashlib.blake2b(f"sim-seed-{config.seed}".encode()).digest()[:32]
               if config.seed is not None else secrets.token_bytes(32))
        self.codec = TokenCodec(key)
        self.auth = AuthState(self.knobs, clock, client_id=config.client_id,
                              client_secret=config.client_secret,
                              static_token=config.access_token)
        self.auth.add_refresh_token(config.refresh_token, user=config.user_id)
        self.limiter = SlidingWindowLimiter()
        self.stats = Stats()
        self.containers: dict[str, Container] = {}
        self._last_created = 0.0
        ids = config.containers or [
            fmt_uuid(random_uuid_int(self.rng)) for _ in range(config.generated_containers)]
        for cid in ids:
            self.add_container(cid, config.relationships)

    # -- knobs ---------------------------------------------------------------------------------

    def set_knobs(self, **changes: Any) -> Knobs:
        """Change knobs atomically (validated; unknown names raise ValueError)."""
        names = {f.name for f in dataclasses.fields(Knobs)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        candidate = dataclasses.replace(self.knobs, **changes)
        candidate.validate()
        for name, value in changes.items():
            setattr(self.knobs, name, value)
        return self.knobs

    # -- containers ----------------------------------------------------------------------------

    def container(self, container_id: str) -> Container:
        """The container (KeyError if unknown); ids are case-insensitive."""
        return self.containers[container_id.lower()]

    def add_container(self, container_id: str | None = None, relationships: int = 0) -> str:
        """Add an empty container, then ``relationships`` generated ones dated in the past."""
        if container_id is None:
            container_id = fmt_uuid(random_uuid_int(self.rng))
        value = parse_uuid(container_id)
        if value is None:
            raise ValueError(f"container id must be a UUID: {container_id!r}")
        cid = fmt_uuid(value)
        if cid in self.containers:
            raise ValueError(f"container exists: {cid}")
        self.containers[cid] = Container(cid)
        if relationships:
            now = self.wall()
            self._generate(self.containers[cid], relationships, now - _HISTORY_SECONDS, now)
        return cid

    # -- relationships -------------------------------------------------------------------------

    def timestamp(self) -> float:
        """Now, strictly after every earlier creation (creation order = time order)."""
        ts = max(self.wall(), self._last_created + 1e-6)
        self._last_created = ts
        return ts

    def _generate(self, c: Container, n: int, start: float | None = None,
                  stop: float | None = None) -> list[int]:
        """``n`` random relationships; dated from ``start`` to ``stop``, else from now on."""
        rng, by_id, pick = self.rng, c.by_id, c.random_entity
        rand, choose, append = rng.random, catalog.choose_pair, c.append_new
        if start is None or stop is None:
            start, step = self.timestamp(), 1e-6
        else:
            step = (stop - start) / max(n, 1)
        uids: list[int] = []
        with no_gc():
            for k in range(n):
                kind_a, kind_b = choose(rng)
                a, b = pick(kind_a, rng), pick(kind_b, rng)
                flags = FLAG_SERVICE | FLAG_READ_ONLY if rand() < _SERVICE_SHARE else 0
                uid = random_uuid_int(rng)
                while uid in by_id:
                    uid = random_uuid_int(rng)
                append(uid, start + k * step, flags, a, b)
                uids.append(uid)
        self._last_created = max(self._last_created, start + n * step)
        return uids

    def create_relationships(self, container_id: str, what: int | Iterable[PairLike],
                             *, service: bool = False) -> list[str]:
        """Create ``what`` generated relationships, or one per given entity pair; their ids.

        A pair is two entities, each ``(domain, type, id)`` or ``{"domain", "type", "id"}``.
        """
        c = self.container(container_id)
        if isinstance(what, int):
            return [fmt_uuid(u) for u in self._generate(c, what)]
        flags = FLAG_SERVICE | FLAG_READ_ONLY if service else 0
        out = []
        for pair in what:
            a, b = (_entity(e) for e in pair)
            uid = random_uuid_int(self.rng)
            out.append(fmt_uuid(c.create(a, b, self.timestamp(), flags, uid).uid))
        return out

    def delete_relationships(self, container_id: str, ids: Iterable[str]) -> list[str]:
        """Soft-delete; returns the ids deleted now (unknown or already deleted are skipped)."""
        c = self.container(container_id)
        done = []
        for rid in ids:
            uid = parse_uuid(rid)
            rel = c.by_id.get(uid) if uid is not None else None
            if rel is not None and c.delete(rel, self.timestamp()):
                done.append(fmt_uuid(rel.uid))
        return done

    def delete_random(self, container_id: str, n: int) -> list[str]:
        c = self.container(container_id)
        done = []
        for _ in range(n):
            rel = c.random_live(self.rng)
            if rel is None:
                break
            c.delete(rel, self.timestamp())
            done.append(fmt_uuid(rel.uid))
        return done

    def random_change(self) -> None:
        """One change in a random container: ~70% creates, ~30% deletes of live ones."""
        if not self.containers:
            return
        cid = self.rng.choice(list(self.containers))
        if self.rng.random() < _CREATE_SHARE or not self.delete_random(cid, 1):
            self._generate(self.containers[cid], 1)

    def move_retention_horizon(self, container_id: str) -> int:
        """Forget history up to now: every token older than this gets overwrite."""
        c = self.container(container_id)
        c.horizon = c.seq
        c.status_memo.clear()
        return c.horizon

    def ground_truth(self, container_id: str, since: int = 0) -> dict[str, Any]:
        """``{"changes": [{"seq","kind","id","at"}...], "live": set of ids, "seq", "horizon"}``.

        ``changes`` is the change log in order (only entries after seq ``since``); ``live`` is
        every relationship alive now.
        """
        return self.container(container_id).ground_truth(since)

    # -- credentials and tokens ----------------------------------------------------------------

    def issue_refresh_token(self, user: str | None = None) -> str:
        """A new usable refresh token for ``user`` (another credential seed)."""
        return self.auth.add_refresh_token(user=user or self.config.user_id)

    def expire_access_tokens(self) -> int:
        return self.auth.expire_access_tokens()

    def current_sync_token(self, container_id: str, user: str = STATIC_TOKEN_USER,
                           domains: list[str] | None = None) -> str:
        """A caught-up sync token (as after a drained bootstrap), e.g. for the start banner."""
        c = self.container(container_id)
        query = Query.for_domains(domains) if domains else Query.everything()
        return self.codec.encode(SyncToken(c.id, user, query, c.seq))
