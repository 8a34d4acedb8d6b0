"""The Kafka sink: CloudEvents on an Apache Kafka topic through an idempotent aiokafka producer.

Records are built by ``kafka_records`` (CloudEvents Kafka protocol binding: key, value, headers).
A page is split by partition (murmur2 of the key, as every Kafka client's default partitioner)
into record batches that are all handed to the producer before any acknowledgement is awaited.
The producer has acks=all and idempotence on, and keeps one request in flight per broker, so
records of one key stay in order even across retries. Any failure, a delivery that outlasts
``delivery_timeout`` (default: ``request_timeout``), or a stall while no bootstrap server accepts
connections fails the whole ``publish`` with SinkError (the caller retries the page; duplicates
carry the same ``ce_id``). The producer is then discarded and replaced in the background, and the
sink reports itself down (``healthy()``, ``notifier_sink_up``) until a fresh one is connected.
An unreachable broker at startup is handled the same way; only a configuration the broker
rejects for good (create_topic false and no topic) raises SinkConfigError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Self

import aiokafka
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from notifier.core.events import Event
from notifier.errors import SinkConfigError, SinkError
from notifier.sinks.kafka_abandon import TESTED_AIOKAFKA, abandon_pending, missing_internals
from notifier.sinks.kafka_errors import describe, retrieve
from notifier.sinks.kafka_records import (
    ContentMode,
    KeyField,
    Record,
    build_records,
)
from notifier.sinks.kafka_security import (
    KafkaSecurityError,
    client_security,
    explain_connect_failure,
    quiet_aiokafka_connect_errors,
)
from notifier.sinks.kafka_send import send_batches
from notifier.sinks.kafka_topic import TopicError, create_topic, topic_exists

if TYPE_CHECKING:
    from notifier.config.sinks import KafkaSinkConfig
    from notifier.metrics import Metrics

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 10.0  # seconds for close(): flush, then stop the producer


class KafkaSink:
    """Publishes CloudEvents to one Kafka topic; the record format is in ``kafka_records``."""

    def __init__(
        self,
        cfg: KafkaSinkConfig,
        metrics: Metrics,
        *,
        delivery_timeout: float | None = None,
        reconnect_backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        """The sink ``cfg`` describes (already validated: see KafkaSinkConfig's rules).

        ``delivery_timeout`` (default: ``cfg.request_timeout``) bounds one ``publish``;
        ``reconnect_backoff`` is the (first, longest) wait between reconnection attempts.
        """
        self.name = cfg.name
        self.topic = cfg.topic
        self.key: KeyField = cfg.key
        self.content_mode: ContentMode = cfg.content_mode
        self.bootstrap_servers = list(cfg.bootstrap_servers)
        self.create_topic = cfg.create_topic
        self.partitions = cfg.partitions
        self.replication_factor = cfg.replication_factor
        request_timeout = cfg.request_timeout
        self.delivery_timeout = request_timeout if delivery_timeout is None else delivery_timeout
        self._request_timeout = request_timeout
        self._backoff = reconnect_backoff
        self._probe_interval = min(0.5, self.delivery_timeout / 2)
        self._servers_text = ",".join(self.bootstrap_servers)
        self._metrics = metrics
        quiet_aiokafka_connect_errors()
        self._client_options = self._security_options(cfg)
        self._client_options.update(
            bootstrap_servers=self.bootstrap_servers,
            client_id=cfg.client_id,
            request_timeout_ms=int(request_timeout * 1000),
        )
        self._producer_options: dict[str, Any] = dict(
            acks="all", enable_idempotence=True, linger_ms=round(cfg.linger * 1000),
            max_batch_size=int(cfg.max_batch_size),
            compression_type=None if cfg.compression == "none" else cfg.compression,
        )
        self._producer: AIOKafkaProducer | None = None
        self._up = False
        self._fatal: SinkConfigError | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closing = False
        self._internals_reported = False
        self._reported = ""  # the last connection failure logged (the same one is not relogged)
        self._down_reason = ""  # why the last connection attempt failed

    def _security_options(self, cfg: KafkaSinkConfig) -> dict[str, Any]:
        """aiokafka's security options (see notifier.sinks.kafka_security)."""
        try:
            return client_security(cfg)
        except KafkaSecurityError as err:
            raise SinkConfigError(str(err), sink=self.name) from None

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Connect; an unreachable broker is not fatal (retried in the background)."""
        try:
            await self._connect()
        except SinkConfigError:
            raise
        except SinkError as err:
            log.warning("kafka sink %s: %s; retrying in the background", self.name, err)
            self._reported = str(err)
            self._mark_down()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, within: float = CLOSE_TIMEOUT) -> None:
        """Flush what is still queued and stop the producer, all within ``within`` seconds.

        Half of it at most goes to the flush; whatever is still unsent then is dropped (its
        pages were not checkpointed, so they are sent again after a restart).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        self._closing = True
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.flush(), within / 2)
            except TimeoutError:
                log.warning("kafka sink %s: unsent records dropped at shutdown", self.name)
            await self._discard(producer, within=max(0.1, deadline - loop.time()))
        self._set_up(False, quiet=True)

    close_within = close  # what the application calls at shutdown, with the time left

    def healthy(self) -> bool:
        return self._up

    async def _connect(self) -> None:
        """Make sure the topic exists, then start a fresh producer (SinkError if unreachable)."""
        servers = self._servers_text
        try:
            await asyncio.wait_for(self._ensure_topic(), self._request_timeout * 2)
            producer = AIOKafkaProducer(**self._client_options, **self._producer_options)
            try:
                await asyncio.wait_for(producer.start(), self._request_timeout)
                await producer.partitions_for(self.topic)
            except BaseException:
                await self._discard(producer)
                raise
        except SinkError:
            raise
        except (KafkaError, OSError, TimeoutError) as err:
            # aiokafka only logs why it could not bootstrap: find the cause (TLS, SASL) again.
            cause = await explain_connect_failure(
                self.bootstrap_servers, self._client_options, per_server=self._request_timeout)
            self._down_reason = cause or describe(err)
            raise SinkError(f"cannot connect to kafka at {servers}: {self._down_reason}",
                            sink=self.name) from None
        self._check_internals(producer)
        self._producer = producer
        self._set_up(True)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._client_options)
        try:
            await admin.start()
            if await topic_exists(admin, self.topic):
                return
            servers = self._servers_text
            if not self.create_topic:
                raise SinkConfigError(
                    f"kafka topic {self.topic!r} does not exist on {servers} and create_topic "
                    "is false: create it or set create_topic: true", sink=self.name)
            try:
                replication = await create_topic(admin, self.topic, self.partitions,
                                                 self.replication_factor)
            except TopicError as err:
                text = f"{err} on {servers}"
                if err.retriable:
                    raise SinkError(text, sink=self.name) from None  # retried with backoff
                raise SinkConfigError(text, sink=self.name) from None
            log.info("kafka sink %s: created topic %s (%d partitions, replication %d)",
                     self.name, self.topic, self.partitions, replication)
        finally:
            await admin.close()

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        """Send every event and return once all are acknowledged (acks=all), else SinkError."""
        if not events:
            return
        if self._fatal is not None:
            raise SinkConfigError(str(self._fatal), sink=self.name)
        producer = self._producer
        if producer is None or not self._up:
            why = f": {self._down_reason}" if self._down_reason else ""
            raise SinkError(f"kafka at {self._servers_text} is unavailable{why}", sink=self.name)
        records = build_records(events, key=self.key, content_mode=self.content_mode)
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.delivery_timeout):
                await self._while_reachable(self._deliver(producer, records, futures))
        except Exception as err:  # every failure becomes a SinkError below
            failure: BaseException = err
        else:
            errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is None:
                return
            failure = first
        for fut in futures:  # retrieve late outcomes so none is reported as never retrieved
            fut.add_done_callback(retrieve)
        if isinstance(failure, TimeoutError):
            reason = f"not acknowledged within {self.delivery_timeout:.1f}s"
        elif isinstance(failure, _BrokerUnreachable):
            reason = str(failure)
        else:
            reason = describe(failure)
        log.warning("kafka sink %s: publish of %d events failed: %s", self.name, len(events),
                    reason)
        if producer is self._producer:
            self._producer = None
            self._mark_down(producer)
        raise SinkError(f"kafka publish to {self.topic!r} failed: {reason}", sink=self.name)

    async def _deliver(self, producer: AIOKafkaProducer, records: list[Record],
                       futures: list[asyncio.Future[Any]]) -> None:
        """Hand ``records`` to ``producer`` as one closed batch per partition and size limit,
        then wait until every batch is acknowledged or failed."""
        await send_batches(producer, self.topic, records, futures)
        await asyncio.wait(futures)

    async def _while_reachable(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; fail early with _BrokerUnreachable if it stalls while no bootstrap server
        accepts connections (aiokafka would retry, and spin on metadata, until the deadline)."""
        task = asyncio.ensure_future(work)
        wait = min(0.1, self._probe_interval)  # most pages are acknowledged within milliseconds
        try:
            while not (await asyncio.wait([task], timeout=wait))[0]:
                wait = self._probe_interval
                if not await self._reachable():
                    raise _BrokerUnreachable(
                        f"no bootstrap server accepts connections ({self._servers_text})")
            task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _reachable(self) -> bool:
        """Whether any bootstrap server accepts a TCP connection (within a second)."""
        for server in self.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
            except (OSError, ValueError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    # -- outage handling --------------------------------------------------------------------

    def _mark_down(self, broken: AIOKafkaProducer | None = None) -> None:
        self._set_up(False)
        if self._closing or (self._recovery is not None and not self._recovery.done()):
            if broken is not None:
                asyncio.get_running_loop().create_task(self._discard(broken))
            return
        self._recovery = asyncio.get_running_loop().create_task(
            self._recover(broken), name=f"kafka-sink-{self.name}-recovery")

    async def _recover(self, broken: AIOKafkaProducer | None) -> None:
        """Replace the failed producer with a fresh one as soon as the broker answers."""
        if broken is not None:
            await self._discard(broken)
        delay = self._backoff[0]
        while not self._closing:
            try:
                await self._connect()
            except SinkConfigError as err:
                # Not retried quickly, but not given up either: the operator may fix it (create
                # the topic, grant the ACL) without a restart.
                if str(err) != self._reported:
                    log.error("kafka sink %s: %s (retrying every %.0fs)", self.name, err,
                              self._backoff[1])
                    self._reported = str(err)
                self._fatal = err
                delay = self._backoff[1]
            except SinkError as err:
                if str(err) != self._reported:  # a new cause is worth a line; the same one is not
                    log.warning("kafka sink %s: %s", self.name, err)
                    self._reported = str(err)
            except Exception:  # a bug must not end the recovery for good
                log.exception("kafka sink %s: unexpected error while reconnecting", self.name)
            else:
                self._fatal = None
                self._reported = self._down_reason = ""
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _discard(self, producer: AIOKafkaProducer, within: float | None = None) -> None:
        """Stop ``producer`` within ``within`` seconds (default: about two request timeouts),
        failing whatever it still holds."""
        loop = asyncio.get_running_loop()
        within = self._request_timeout * 2 + 1 if within is None else within
        deadline = loop.time() + within
        if self._check_internals(producer):
            try:
                await abandon_pending(producer, within / 2)
            except Exception:  # aiokafka internals changed: stop() below is still bounded
                log.exception("kafka sink %s: could not fail the producer's pending batches",
                              self.name)
        try:
            await asyncio.wait_for(producer.stop(), max(0.1, deadline - loop.time()))
        except (KafkaError, OSError, TimeoutError) as err:
            log.warning("kafka sink %s: producer not stopped cleanly within %.1fs: %s",
                        self.name, within, describe(err))
            with contextlib.suppress(KafkaError, OSError, TimeoutError):  # drop its connections
                await asyncio.wait_for(producer.client.close(), 1.0)

    def _check_internals(self, producer: AIOKafkaProducer) -> bool:
        """Whether ``producer`` has the internals ``abandon_pending`` needs; if not, say so
        loudly, once (log error and notifier_sink_kafka_internals_missing 1)."""
        missing = missing_internals(producer)
        self._metrics.kafka_internals_missing(self.name, bool(missing))
        if missing and not self._internals_reported:
            self._internals_reported = True
            log.error("kafka sink %s: aiokafka %s lacks %s, which the sink uses to stop a "
                      "producer while the broker is down (tested with aiokafka %s); such a stop "
                      "now waits out its timeout", self.name, aiokafka.__version__,
                      ", ".join(missing), TESTED_AIOKAFKA)
        return not missing

    def _set_up(self, up: bool, *, quiet: bool = False) -> None:
        if up != self._up:
            self._up = up
            if up:
                log.info("kafka sink %s: up (%s, topic %s)", self.name, self._servers_text,
                         self.topic)
            elif not quiet:
                log.warning("kafka sink %s: down", self.name)
        self._metrics.sink_up(self.name, up)


class _BrokerUnreachable(Exception):
    """No bootstrap server accepts connections."""
