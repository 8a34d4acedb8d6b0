"""Building the polling side from the config: credentials' clients, streams, schedulers.

``Assembly`` holds what every round of building shares (the process's drain slots, the
keep-alive pool, the token providers that hub discovery reuses), so that cluster mode, which
builds the schedulers of each work partition as it is assigned, builds them like the single
process does all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

import aiohttp

from notifier.cluster.partitions import assign_credential
from notifier.config import Config
from notifier.core.budget import RequestBudget
from notifier.core.planner import SchedulerSettings
from notifier.discovery import token_provider
from notifier.metrics import Metrics
from notifier.scheduler import CredentialScheduler
from notifier.sinks.base import Sink, split_sinks
from notifier.source.auth import TokenProvider
from notifier.source.client import RelationshipClient
from notifier.source.credential_log import RefreshRecorder
from notifier.source.keepalive import KeepAlivePool
from notifier.state.base import StateStore
from notifier.store_guard import StoreGuard
from notifier.stream import SinkSplit, StreamSpec
from notifier.sync import StreamSyncer

RefreshGuard = Callable[[], AbstractAsyncContextManager[None]]


class Assembly:
    """Builds clients and schedulers of a config (see the module doc)."""

    def __init__(self, config: Config, *, metrics: Metrics, guard: StoreGuard,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics = metrics
        self._guard = guard
        self._clock = clock
        self._started_at = clock()
        # One set of drain slots for the process (in cluster mode also across partitions).
        self.drain_slots = asyncio.Semaphore(max(1, config.poll.sync_concurrency))
        self.keepalive: KeepAlivePool | None = None  # syncStatus and sync's lean path
        self.tokens: dict[str, TokenProvider] = {}  # of the last clients built

    def build_clients(self, session: aiohttp.ClientSession, store: StateStore,
                      probes: Mapping[str, RefreshGuard] | None = None,
                      ) -> dict[str, RelationshipClient]:
        """Clients of every credential, or (cluster mode) of those in ``probes``, each
        refreshing only inside its guard (the partition is still owned, and kept meanwhile)."""
        cfg = self.config
        clients: dict[str, RelationshipClient] = {}
        self.tokens = {}
        for cred in cfg.credentials:
            if probes is not None and cred.name not in probes:
                continue
            observer = self.metrics.client_observer(cred.name)
            tokens = token_provider(cfg, cred, session, store,
                                    RefreshRecorder(store, self.metrics),
                                    refresh_guard=None if probes is None else probes[cred.name])
            self.tokens[cred.name] = tokens  # hub discovery shares them (one rotation)
            budget = RequestBudget(int(cred.requests_per_minute), reserve=cred.reserve,
                                   name=cred.name)
            self.metrics.budget_configured(cred.name, cred.requests_per_minute)
            clients[cred.name] = RelationshipClient(
                session,
                base_url=cfg.source.base_url,
                credential_name=cred.name,
                tokens=tokens,
                budget=budget,
                region=cfg.source.region,
                timeout=cfg.source.timeout,
                max_attempts=cfg.source.max_attempts,
                concurrency=cfg.source.concurrency,
                observer=observer,
                max_response_bytes=cfg.source.max_response_bytes,
                keepalive=self.keepalive,
            )
        return clients

    def specs(self, sinks: Mapping[str, Sink]) -> dict[str, list[StreamSpec]]:
        """Every stream of the config, by the credential that will poll it."""
        out: dict[str, list[StreamSpec]] = {c.name: [] for c in self.config.credentials}
        # Subscriptions by the 100,000 name the same few credentials and sinks: one tuple each.
        cred_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        sink_sets: dict[tuple[str, ...], tuple[tuple[Sink, ...], SinkSplit]] = {}
        for sub in self.config.subscriptions:
            creds = tuple(sub.credential_names)
            creds = cred_sets.setdefault(creds, creds)
            names = tuple(sub.sinks)
            if names not in sink_sets:
                chosen = tuple(sinks[n] for n in names)
                sink_sets[names] = (chosen, split_sinks(chosen))
            sub_sinks, split = sink_sets[names]
            domains = tuple(sub.domains) if sub.domains else None
            query = sub.query.as_params() if sub.query is not None else None
            for cid in sub.containers:
                spec = StreamSpec(
                    subscription=sub.name, container_id=cid, credentials=creds,
                    sinks=sub_sinks, domains=domains, query=query,
                    emit_initial=sub.emit_initial, split=split,
                )
                out[assign_credential(cid, creds)].append(spec)
        return out

    def build_schedulers(self, clients: Mapping[str, RelationshipClient],
                         sinks: Mapping[str, Sink], store: StateStore,
                         syncer: StreamSyncer) -> list[CredentialScheduler]:
        """A scheduler for every credential in ``clients`` that has streams (or a hub)."""
        poll = self.config.poll
        creds = {c.name: c for c in self.config.credentials}
        out = []
        hub_credentials = {sub.credential_names[0] for sub in self.config.hub_subscriptions}
        for name, specs in self.specs(sinks).items():
            if (not specs and name not in hub_credentials) or name not in clients:
                continue
            cred = creds[name]
            settings = SchedulerSettings(
                interval=poll.interval, max_staleness=poll.max_staleness,
                status_chunk=poll.status_chunk,
                quarantine_initial=poll.quarantine_backoff_initial,
                quarantine_max=poll.quarantine_backoff_max,
                policy=poll.scheduler,
                requests_per_minute=cred.requests_per_minute, reserve=cred.reserve,
                workers=max(2, self.config.source.concurrency),
                drain_turn_pages=poll.drain_pages_per_turn,
            )
            out.append(CredentialScheduler(
                name, clients[name], specs, store=store, syncer=syncer, settings=settings,
                drain_slots=self.drain_slots, metrics=self.metrics, clock=self._clock,
                started_at=self._started_at, guard=self._guard,
            ))
        return out
