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
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, ProducerClosed, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from notifier.core.events import Event
from notifier.errors import SinkConfigError, SinkError
from notifier.sinks.kafka_records import (
    ContentMode,
    KeyField,
    Record,
    build_records,
    group_by_partition,
)

if TYPE_CHECKING:
    from notifier.config.sinks import KafkaSinkConfig
    from notifier.metrics import Metrics

log = logging.getLogger(__name__)


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

    def _security_options(self, cfg: KafkaSinkConfig) -> dict[str, Any]:
        """aiokafka's security options; the config model has checked which ones go together."""
        protocol = cfg.security_protocol
        opts: dict[str, Any] = {"security_protocol": protocol}
        if protocol.startswith("SASL_"):
            assert cfg.sasl_password is not None
            opts.update(sasl_mechanism=cfg.sasl_mechanism,
                        sasl_plain_username=cfg.sasl_username,
                        sasl_plain_password=cfg.sasl_password.get_secret_value())
        if protocol.endswith("SSL"):
            if cfg.ssl_keyfile and not cfg.ssl_certfile:
                raise SinkConfigError("ssl_keyfile needs ssl_certfile", sink=self.name)
            password = cfg.ssl_password.get_secret_value() if cfg.ssl_password else None
            try:
                opts["ssl_context"] = create_ssl_context(
                    cafile=_path(cfg.ssl_cafile), certfile=_path(cfg.ssl_certfile),
                    keyfile=_path(cfg.ssl_keyfile), password=password)
            except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
                raise SinkConfigError(f"cannot build the TLS context: {err}",
                                      sink=self.name) from None
        return opts

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Connect; an unreachable broker is not fatal (retried in the background)."""
        try:
            await self._connect()
        except SinkConfigError:
            raise
        except SinkError as err:
            log.warning("kafka sink %s: %s; retrying in the background", self.name, err)
            self._mark_down()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float = 10.0) -> None:
        """Flush what is still queued (for at most ``grace`` seconds) and stop the producer."""
        self._closing = True
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.flush(), grace)
            except TimeoutError:
                log.warning("kafka sink %s: unsent records dropped at shutdown", self.name)
            await self._discard(producer)
        self._set_up(False, quiet=True)

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
            raise SinkError(f"cannot connect to kafka at {servers}: {_describe(err)}",
                            sink=self.name) from None
        self._producer = producer
        self._set_up(True)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._client_options)
        try:
            await admin.start()
            # list_topics, not describe_topics: a metadata request naming the topic would let a
            # broker with auto.create.topics.enable create it with its own defaults.
            if self.topic in await admin.list_topics():
                return
            servers = self._servers_text
            if not self.create_topic:
                raise SinkConfigError(
                    f"kafka topic {self.topic!r} does not exist on {servers} and create_topic "
                    "is false: create it or set create_topic: true", sink=self.name)
            response = await admin.create_topics([NewTopic(
                self.topic, self.partitions, self.replication_factor)])
            for entry in response.topic_errors:
                error = for_code(entry[1])
                if entry[1] != 0 and error is not TopicAlreadyExistsError:
                    raise SinkConfigError(
                        f"cannot create kafka topic {self.topic!r} on {servers}: "
                        f"{error.__name__} {entry[2] if len(entry) > 2 else ''}".rstrip(),
                        sink=self.name)
            log.info("kafka sink %s: created topic %s (%d partitions, replication %d)",
                     self.name, self.topic, self.partitions, self.replication_factor)
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
            raise SinkError(f"kafka at {self._servers_text} is unavailable", sink=self.name)
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
            fut.add_done_callback(_consume)
        if isinstance(failure, TimeoutError):
            reason = f"not acknowledged within {self.delivery_timeout:.1f}s"
        elif isinstance(failure, _BrokerUnreachable):
            reason = str(failure)
        else:
            reason = _describe(failure)
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
        partitions = producer.client.cluster.partitions_for_topic(self.topic)
        if not partitions:
            partitions = await producer.partitions_for(self.topic)
        by_partition = group_by_partition(records, sorted(partitions))
        now_ms = int(time.time() * 1000)
        for p, group in by_partition.items():
            batch = producer.create_batch()
            for k, value, headers in group:
                if batch.append(timestamp=now_ms, key=k, value=value, headers=headers) is None:
                    batch.close()
                    futures.append(await producer.send_batch(batch, self.topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(timestamp=now_ms, key=k, value=value, headers=headers)
            batch.close()
            futures.append(await producer.send_batch(batch, self.topic, partition=p))
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
                log.error("kafka sink %s: %s", self.name, err)
                self._fatal = err
                return
            except SinkError as err:
                log.debug("kafka sink %s: %s", self.name, err)
            except Exception:  # a bug must not end the recovery for good
                log.exception("kafka sink %s: unexpected error while reconnecting", self.name)
            else:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer`` within a bounded time, failing whatever it still holds."""
        try:
            await _abandon_pending(producer, self._request_timeout + 1)
        except Exception:  # aiokafka internals changed: stop() below is still bounded
            log.exception("kafka sink %s: could not fail the producer's pending batches",
                          self.name)
        try:
            await asyncio.wait_for(producer.stop(), self._request_timeout)
        except (KafkaError, OSError, TimeoutError) as err:
            log.debug("kafka sink %s: producer stop: %s", self.name, _describe(err))

    def _set_up(self, up: bool, *, quiet: bool = False) -> None:
        if up != self._up:
            self._up = up
            if up:
                log.info("kafka sink %s: up (%s, topic %s)", self.name, self._servers_text,
                         self.topic)
            elif not quiet:
                log.warning("kafka sink %s: down", self.name)
        self._metrics.sink_up(self.name, up)


async def _abandon_pending(producer: AIOKafkaProducer, grace: float) -> None:
    """Stop ``producer``'s sender, then fail every batch it still holds, so that stop() cannot
    wait on them forever.

    An idempotent aiokafka producer retries a batch until the broker takes it, so with the broker
    gone stop() would never return; the pages of those batches are retried by the caller with a
    new producer. This reaches into aiokafka internals (written against aiokafka 0.14; the
    integration tests stop a broker mid-run to cover it). The sender is stopped first because
    it re-queues an in-flight batch after a failed request, which must not meet a failed one.
    """
    sender = getattr(producer, "_sender", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    if sender is None or accumulator is None:
        return
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(sender.close(), grace)
    batches = [b for queue in getattr(accumulator, "_batches", {}).values() for b in queue]
    in_flight = getattr(accumulator, "_pending_batches", None)
    if isinstance(in_flight, set):
        # A batch re-queued after a failed request still carries the callback that removes it
        # from the in-flight set once it completes: put it back there first.
        in_flight.update(b for b in batches if getattr(b, "retry_count", 0))
    accumulator.fail_all(ProducerClosed())
    for batch in batches:  # nobody awaits a queued batch's drain waiter: mark it retrieved
        waiter = getattr(batch, "_drain_waiter", None)
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()


class _BrokerUnreachable(Exception):
    """No bootstrap server accepts connections."""


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
