"""The drain in cluster mode: each page's publish and checkpoint in one partition transaction.

``ClusterSyncer`` is the ordinary ``StreamSyncer`` with its writing steps (a page, a batch of
end-of-resync deletions) run in the scope of the stream's work partition, so the events the
Kafka sink hands over and the state rows the checkpoint writes commit together.
"""

from __future__ import annotations

from typing import Any

from notifier.cluster.store import ClusterStore
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer


class ClusterSyncer(StreamSyncer):
    """A StreamSyncer whose pages commit in their partition's Kafka transaction.

    It announces nothing (``ANNOUNCES``): an announcement remembers a created event that went
    out while the checkpoint covering it may never commit. Here the direct sinks are Kafka sinks
    writing into the page's transaction (check-config refuses the others), so a page's events
    become visible to read_committed consumers only together with its checkpoint: a crash, a
    failed publish or a failed commit in between aborts them (the next owner's
    ``init_transactions`` aborts a transaction left open), and nothing went out that the state
    does not know. The rows an announcement wrote were deleted again in the same transaction.
    """

    ANNOUNCES = False

    def __init__(self, store: ClusterStore, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self._cluster = store

    async def _apply(self, spec: StreamSpec, *args: Any, **kwargs: Any) -> bool:
        async with self._cluster.stream_scope(spec.subscription, spec.container_id):
            return await super()._apply(spec, *args, **kwargs)

    async def _settle(self, spec: StreamSpec, *args: Any, **kwargs: Any) -> None:
        async with self._cluster.stream_scope(spec.subscription, spec.container_id):
            await super()._settle(spec, *args, **kwargs)
