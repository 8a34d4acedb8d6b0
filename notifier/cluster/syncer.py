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
    """A StreamSyncer whose pages commit in their partition's Kafka transaction."""

    def __init__(self, store: ClusterStore, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self._cluster = store

    async def _apply(self, spec: StreamSpec, *args: Any, **kwargs: Any) -> bool:
        async with self._cluster.stream_scope(spec.subscription, spec.container_id):
            return await super()._apply(spec, *args, **kwargs)

    async def _settle(self, spec: StreamSpec, *args: Any, **kwargs: Any) -> None:
        async with self._cluster.stream_scope(spec.subscription, spec.container_id):
            await super()._settle(spec, *args, **kwargs)
