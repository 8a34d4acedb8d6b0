"""The Kafka sink in cluster mode: events go into the work partition's open Kafka transaction.

The cluster layer (notifier.cluster.txn) opens a *scope* around every write of a work
partition and publishes it here as the current ``Transaction`` (a context variable, so it
follows the drain's task and the publisher's gathered tasks). ``publish`` hands the records to
that transaction and returns: nothing is visible to read_committed consumers until the scope
commits the transaction together with the state records that checkpoint the page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Protocol, Self

from notifier.core.events import Event
from notifier.errors import SinkConfigError, SinkError
from notifier.sinks.kafka import KafkaSink
from notifier.sinks.kafka_records import Record, build_records

log = logging.getLogger(__name__)


class Transaction(Protocol):
    """The open Kafka transaction of the current scope (see notifier.cluster.txn)."""

    async def send_records(self, topic: str, records: Sequence[Record]) -> None:
        """Add ``records`` to the transaction (partitioned by key as every Kafka client)."""
        ...


current_transaction: ContextVar[Transaction | None] = ContextVar(
    "notifier_kafka_transaction", default=None)


class TransactionalKafkaSink(KafkaSink):
    """A Kafka sink without a producer of its own: it writes in the current transaction."""

    _topic_ready = False

    async def __aenter__(self) -> Self:
        """Make sure the topic exists; an unreachable broker is retried at the first publish."""
        try:
            await self._ensure()
        except SinkConfigError:
            raise
        except SinkError as err:
            log.warning("kafka sink %s: %s; retried at the first publish", self.name, err)
        return self

    async def close(self, within: float = 0.0) -> None:
        self._set_up(False, quiet=True)

    close_within = close

    async def _ensure(self) -> None:
        if self._topic_ready:
            return
        try:
            await asyncio.wait_for(self._ensure_topic(), self._request_timeout * 2)
        except (SinkError, SinkConfigError):
            raise
        except Exception as err:
            raise SinkError(f"cannot reach kafka at {self._servers_text} to check topic "
                            f"{self.topic!r}: {type(err).__name__}", sink=self.name) from None
        self._topic_ready = True
        self._set_up(True)

    async def publish(self, events: Sequence[Event]) -> None:
        """Add ``events`` to the current transaction; they commit with their checkpoint."""
        if not events:
            return
        txn = current_transaction.get()
        if txn is None:
            raise SinkError("cluster mode: no work-partition transaction is open",
                            sink=self.name)
        await self._ensure()
        records = build_records(events, key=self.key, content_mode=self.content_mode)
        await txn.send_records(self.topic, records)
