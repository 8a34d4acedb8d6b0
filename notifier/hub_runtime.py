"""Hub subscriptions inside the running service: discovered projects become streams.

``HubStreams`` owns one ``HubWatcher`` per hub subscription and applies what each discovery
changed to the credential's ``CredentialScheduler``: an added project becomes a stream
(subscription x container) with the subscription's filters and sinks and ``projectName`` in its
events; a retired one stops being polled and its stored state is marked orphaned, so it follows
``state.orphan_retention`` like a subscription removed from the configuration (kept, then
dropped; a project that comes back within the retention resumes from its token).

At start: the last known list comes from the store (the subscription's streams not orphaned)
and is polled at once; its first discovery runs in the background as the loops start. A hub
with no stored list (the first run) is discovered before polling starts, bounded by
``STARTUP_TIMEOUT``; a failure there leaves it empty until a retry (with backoff) succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from notifier.config import Config, SubscriptionConfig
from notifier.core.projects import Changes, Project
from notifier.discovery import projects_client
from notifier.hub_watch import STARTUP_TIMEOUT, HubWatcher, status_path, write_statuses
from notifier.metrics import Metrics
from notifier.scheduler import CredentialScheduler
from notifier.sinks.base import Sink
from notifier.source.auth import TokenProvider
from notifier.source.projects import ProjectsClient
from notifier.state.base import StateStore
from notifier.stream import StreamSpec

log = logging.getLogger(__name__)


def hub_spec(sub: SubscriptionConfig, project: Project, sinks: Mapping[str, Sink]) -> StreamSpec:
    """The stream of one discovered project: a listed container with the project's name."""
    cid = project.container_id
    assert cid is not None
    return StreamSpec(
        subscription=sub.name, container_id=cid, credentials=(sub.credential_names[0],),
        sinks=tuple(sinks[n] for n in sub.sinks),
        domains=tuple(sub.domains) if sub.domains else None,
        query=sub.query.as_params() if sub.query is not None else None,
        emit_initial=sub.emit_initial,
        project_name=project.name or None,
    )


class HubStreams:
    """Every hub subscription of the config, wired to the schedulers."""

    def __init__(self, config: Config, schedulers: Mapping[str, CredentialScheduler], *,
                 sinks: Mapping[str, Sink], store: StateStore,
                 tokens: Mapping[str, TokenProvider], session: aiohttp.ClientSession,
                 metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._schedulers = schedulers
        self._sinks = sinks
        self._store = store
        self._clock = clock
        self._status_file = status_path(Path(config.state.path))
        clients: dict[str, ProjectsClient] = {}
        self.watchers: list[HubWatcher] = []
        for sub in config.hub_subscriptions:
            cred = sub.credential_names[0]
            if cred not in schedulers:  # cluster mode: its work partition is not ours
                continue
            if cred not in clients:
                clients[cred] = projects_client(config, cred, session, tokens[cred],
                                                metrics.client_observer(cred))
            self.watchers.append(HubWatcher(sub, clients[cred], self._apply,
                                            metrics=metrics.hubs, clock=clock))

    async def start(self, *, wait_all: bool = False,
                    give_up_after: float = STARTUP_TIMEOUT) -> None:
        """Poll the last known projects; discover the hubs without one now (in parallel,
        bounded), the others in the background as soon as the loops start (``wait_all``: every
        hub now, for ``run --once``)."""
        if not self.watchers:
            return
        stored = await self._store.list_streams()
        first: list[HubWatcher] = []
        for w in self.watchers:
            known = [st.container_id for st in stored
                     if st.subscription == w.sub.name and st.orphaned_at is None]
            seeded = w.seed(known)
            if seeded:
                await self._scheduler(w).add_streams(
                    [hub_spec(w.sub, p, self._sinks) for p in seeded])
            if wait_all or not seeded:
                first.append(w)
            else:
                w.due_now = True
        await asyncio.gather(*(w.discover(give_up_after) for w in first))
        self.save_status()

    def tasks(self, stop: asyncio.Event | None = None) -> list[asyncio.Task[None]]:
        """The discovery loops, one per hub subscription, until ``stop`` (None: until its
        credential's scheduler is stopped, as in cluster mode when its partition moves)."""
        return [asyncio.create_task(w.run(stop or self._scheduler(w).stopping,
                                          self.save_status), name=f"hub-{w.sub.name}")
                for w in self.watchers]

    def save_status(self) -> None:
        if not self.watchers:
            return
        try:
            write_statuses(self._status_file, (w.status for w in self.watchers))
        except OSError as exc:
            log.warning("cannot write the hub status file %s: %s", self._status_file, exc)

    def _scheduler(self, w: HubWatcher) -> CredentialScheduler:
        return self._schedulers[w.sub.credential_names[0]]

    async def _apply(self, w: HubWatcher, changes: Changes) -> None:
        sch = self._scheduler(w)
        sub = w.sub
        if changes.retired:
            sch.remove_streams({(sub.name, cid) for cid in changes.retired})
            log.info("hub subscription %s: stopped polling %d retired project(s) (state kept "
                     "for state.orphan_retention): %s", sub.name, len(changes.retired),
                     ", ".join(changes.retired[:10]))
        if changes.added:
            await sch.add_streams([hub_spec(sub, p, self._sinks) for p in changes.added])
        if changes.renamed:
            sch.replace_specs([hub_spec(sub, p, self._sinks) for p in changes.renamed])
        if changes.added or changes.retired:
            await self._mark_orphans()

    async def prune_retired(self) -> None:
        """Drop the retired streams past the retention now (cluster mode: a new owner of the
        partition, whose drops otherwise wait for the next change of a hub's projects)."""
        if self.watchers:
            await self._mark_orphans()

    async def _mark_orphans(self) -> None:
        """Retired streams become orphans (kept for the retention, then dropped); re-added ones
        stop being. Only the hub subscriptions' streams: a subscription missing from the
        configuration is the start's business (notifier.housekeeping.prune_orphans)."""
        keep = {r.spec.key for s in self._schedulers.values() for r in s.streams}
        res = await self._store.prune_streams(
            keep, now=self._clock(), retention=self._config.state.orphan_retention,
            subscriptions={w.sub.name for w in self.watchers})
        if res.dropped:
            log.info("forgot %d orphaned stream(s) past the orphan retention", len(res.dropped))
