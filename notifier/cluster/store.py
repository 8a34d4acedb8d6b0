"""The SQLite store as the cluster's local cache: every write runs in its partition's scope.

``ClusterStore`` is the ordinary SQLite store with capture installed (notifier.cluster.capture)
and each writing method wrapped in the scope of the work partition it writes (its stream's or
credential's, notifier.cluster.partitions), so the rows it changes reach the state topic in
that partition's transaction before the method returns. A partition this replica does not own
(or is restoring) refuses writes with PartitionLostError. Reads are the SQLite store's, but for
the webhook outbox's (notifier.cluster.outbox: only rows of owned partitions).
Operations that move state between streams (forget, rename, prune) are refused: in cluster
mode the state lives in the topic, not in this file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from notifier.cluster import capture
from notifier.cluster.apply import BadRecords, apply_records
from notifier.cluster.capture import Pending, Table
from notifier.cluster.outbox import ClusterOutbox
from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import CHUNK_ROWS
from notifier.cluster.strays import Strays
from notifier.cluster.txn import PartitionTxn
from notifier.errors import PartitionLostError, StateError
from notifier.state.base import GroupKey, PruneResult, StreamKey
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_base import StoreObserver
from notifier.state.sqlite_known import drop_staging


class ClusterStore(ClusterOutbox, SqliteStateStore):
    """``async with ClusterStore(path, work)``: the local cache of the owned partitions."""

    # The state topic is the truth: a commit need not be fsync'd (a cache a power loss set
    # back is wiped and restored from the topic when its partitions are next assigned).
    SYNCHRONOUS = "NORMAL"

    def __init__(self, path: str | Path, work: WorkMap, *, busy_timeout: float = 10.0,
                 observer: StoreObserver | None = None) -> None:
        super().__init__(path, busy_timeout=busy_timeout, observer=observer)
        self.work = work
        self._ids.chunk_rows = CHUNK_ROWS
        self._tables: dict[str, Table] = {}
        self.txns: dict[int, PartitionTxn] = {}  # the owned partitions (the coordinator's)
        self._open_marks = {}  # delivered marks waiting for their partition (ClusterOutbox)

    async def open(self) -> None:
        await super().open()
        self._tables = await self._call("install change capture", capture.install, self.work)
        # Never written here (mark_checked), so none but a single process' file's, which
        # the topic's rows, not the file's, replace: they would speak for restored streams.
        await self._call("drop group check stamps", capture.drop_group_stamps)

    # -- scopes -----------------------------------------------------------------------------

    @asynccontextmanager
    async def stream_scope(self, subscription: str, container_id: str) -> AsyncIterator[None]:
        """The scope of the partition that owns the stream (see PartitionTxn.scope)."""
        p = self.work.of_stream(subscription, container_id)
        async with self._scope(p, f"stream {subscription}/{container_id}"):
            yield

    @asynccontextmanager
    async def _scope(self, partition: int | None, what: str) -> AsyncIterator[None]:
        txn = self.txns.get(partition) if partition is not None else None
        if txn is None:
            raise PartitionLostError(f"{what}: its work partition is not owned by this replica",
                                     sink="cluster")
        async with txn.scope():
            yield

    def _credential_scope(self, credential: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._scope(self.work.of_credential(credential), f"credential {credential}")

    # -- the outbox's view of ownership (notifier.cluster.outbox) -------------------------------

    def _stream_partition(self, subscription: str, container_id: str) -> int | None:
        return self.work.of_stream(subscription, container_id)

    def _partition_scope(self, partition: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self._scope(partition, f"outbox of work partition {partition}")

    def _owned_partitions(self, *, idle: bool) -> list[int]:
        return [p for p, txn in self.txns.items() if txn.serving and not (idle and txn.busy)]

    # -- the cluster's own calls --------------------------------------------------------------

    async def take_pending(self, partition: int) -> Pending:
        return await self._call("read captured rows", capture.take_pending, self._tables,
                                partition)

    async def delete_pending(self, partition: int, upto: int) -> None:
        await self._call("forget shipped rows", capture.delete_pending, partition, upto)

    async def wipe_partition(self, partition: int) -> None:
        """Drop the partition's rows from the cache, before a restore (with the resync ids the
        store holds in memory for its streams: the restored state may be another replica's)."""
        await self._call("drop held resync ids", drop_staging, self._ids,
                         lambda key: self.work.of_stream(*key) == partition)
        await self._call("wipe partition", capture.wipe, self._tables, partition,
                         self.work.credentials_in(partition))
        self._ids.clear()

    async def apply(self, records: Sequence[tuple[bytes | None, bytes | None]],
                    bad: BadRecords | None = None, strays: Strays | None = None) -> int:
        """Apply restored records; how many were rows. Unreadable ones are noted in ``bad``,
        those of streams the configuration puts elsewhere in ``strays`` (see
        ``apply_records``)."""
        try:
            return await self._call("restore", apply_records, self._tables, records, bad,
                                    strays)
        finally:
            self._ids.clear()

    # -- writes, each in its partition's scope -------------------------------------------------

    async def save_refresh_token(self, credential: str, *args: Any, **kwargs: Any) -> None:
        async with self._credential_scope(credential):
            await super().save_refresh_token(credential, *args, **kwargs)

    async def record_credential_outcome(self, credential: str, *args: Any,
                                        **kwargs: Any) -> None:
        async with self._credential_scope(credential):
            await super().record_credential_outcome(credential, *args, **kwargs)

    async def mark_checked(self, keys: Sequence[StreamKey], now: float,
                           groups: Sequence[GroupKey] = ()) -> None:
        # Every stream's own row, groups too: the state topic carries stream rows only.
        by_partition: dict[int | None, list[StreamKey]] = {}
        for key in [*keys, *((sub, cid) for cid, subs in groups for sub in subs)]:
            by_partition.setdefault(self.work.of_stream(*key), []).append(key)
        for p, some in by_partition.items():
            async with self._scope(p, "status check"):
                await super().mark_checked(some, now)

    async def quarantine(self, subscription: str, container_id: str, *args: Any,
                         **kwargs: Any) -> None:
        async with self.stream_scope(subscription, container_id):
            await super().quarantine(subscription, container_id, *args, **kwargs)

    async def clear_quarantine(self, subscription: str, container_id: str, *args: Any,
                               **kwargs: Any) -> None:
        async with self.stream_scope(subscription, container_id):
            await super().clear_quarantine(subscription, container_id, *args, **kwargs)

    async def commit_page(self, subscription: str, container_id: str, *args: Any,
                          **kwargs: Any) -> None:
        async with self.stream_scope(subscription, container_id):
            await super().commit_page(subscription, container_id, *args, **kwargs)

    async def begin_resync(self, subscription: str, container_id: str, *args: Any,
                           **kwargs: Any) -> None:
        async with self.stream_scope(subscription, container_id):
            await super().begin_resync(subscription, container_id, *args, **kwargs)

    async def mark_announced(self, subscription: str, container_id: str, *args: Any,
                             **kwargs: Any) -> None:
        async with self.stream_scope(subscription, container_id):
            await super().mark_announced(subscription, container_id, *args, **kwargs)

    async def forget_stream(self, subscription: str, container_id: str) -> bool:
        raise StateError(_NOT_HERE)

    async def prune_streams(self, keep: set[StreamKey], *, now: float, retention: float,
                            subscriptions: set[str] | None = None) -> PruneResult:
        """Hub retirement (``subscriptions``: the hub subscriptions' streams): retired streams
        are marked orphaned and re-added ones un-marked, and those orphaned for ``retention``
        dropped (tombstones in the topic), in their partition's scope, so a new owner seeds the
        same list. Pruning every subscription (the start's orphans) is refused: a single
        process's orphans are strays here (notifier.cluster.strays)."""
        if subscriptions is None:
            raise StateError(_NOT_HERE)
        by_partition: dict[int, set[str]] = {}
        for st in await self.list_streams():
            p = self.work.of_stream(st.subscription, st.container_id)
            if st.subscription in subscriptions and p is not None:
                by_partition.setdefault(p, set()).add(st.subscription)
        result = PruneResult([], [], [])
        for p, subs in by_partition.items():
            async with self._scope(p, "hub retirement"):
                res = await super().prune_streams(keep, now=now, retention=retention,
                                                  subscriptions=subs)
            result.orphaned.extend(res.orphaned)
            result.kept.extend(res.kept)
            result.dropped.extend(res.dropped)
        return result

    async def forget_subscription(self, subscription: str) -> int:
        raise StateError(_NOT_HERE)

    async def rename_subscription(self, old: str, new: str) -> int:
        raise StateError(_NOT_HERE)


_NOT_HERE = ("not available in cluster mode: the state lives in the state topic (move it with "
             "notifier state export / import)")

