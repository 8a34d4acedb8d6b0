"""Stopping an aiokafka producer whose broker is gone: the one place that uses aiokafka internals.

An idempotent producer retries a batch until the broker takes it, so with the broker gone its
``stop()`` would never return. ``abandon_pending`` fails what it still holds first. It reaches
into private attributes, written and tested against aiokafka ``TESTED_AIOKAFKA`` (pyproject.toml
pins that release line); ``missing_internals`` lists what an installed aiokafka lacks, so the
sink can say so loudly instead of silently waiting out its timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerClosed

TESTED_AIOKAFKA = "0.14"


async def abandon_pending(producer: AIOKafkaProducer, grace: float) -> None:
    """Stop ``producer``'s sender, then fail every batch it still holds, so that stop() cannot
    wait on them forever.

    An idempotent aiokafka producer retries a batch until the broker takes it, so with the broker
    gone stop() would never return; the pages of those batches are retried by the caller with a
    new producer. This reaches into aiokafka internals (written against aiokafka 0.14; the
    integration tests stop a broker mid-run to cover it). The sender is stopped first because
    it re-queues an in-flight batch after a failed request, which must not meet a failed one.
    """
    sender = producer._sender
    accumulator = producer._message_accumulator
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(sender.close(), grace)
    batches = [b for queue in accumulator._batches.values() for b in queue]
    in_flight = accumulator._pending_batches
    if isinstance(in_flight, set):
        # A batch re-queued after a failed request still carries the callback that removes it
        # from the in-flight set once it completes: put it back there first.
        in_flight.update(b for b in batches if getattr(b, "retry_count", 0))
    accumulator.fail_all(ProducerClosed())
    for batch in batches:  # nobody awaits a queued batch's drain waiter: mark it retrieved
        waiter = getattr(batch, "_drain_waiter", None)
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()


def missing_internals(producer: AIOKafkaProducer) -> list[str]:
    """The aiokafka internals ``abandon_pending`` uses that ``producer`` lacks."""
    missing = [f"AIOKafkaProducer.{n}" for n in ("_sender", "_message_accumulator")
               if not hasattr(producer, n)]
    if not missing:
        if not callable(getattr(producer._sender, "close", None)):
            missing.append("Sender.close")
        acc = producer._message_accumulator
        missing += [f"MessageAccumulator.{n}" for n in ("_batches", "_pending_batches",
                                                        "fail_all") if not hasattr(acc, n)]
    return missing
