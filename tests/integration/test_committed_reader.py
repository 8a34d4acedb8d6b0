"""The cluster tests' read_committed reader, against a real broker and a real transactional
producer: it sees committed transactions only, once each, in partition order, and it waits for
nothing an open transaction holds; the exactly-once check flags a repeated change."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from notifier.core.events import ChangeKind
from notifier.sinks.kafka_records import build_records
from tests.integration.kafka_support import make_event
from tests.integration.main_job_support import wait_for
from tests.integration.replica_support import CommittedReader, create_topic, duplicate_ids

pytestmark = pytest.mark.kafka


async def test_reader_sees_committed_transactions_only(kafka_bootstrap: str) -> None:
    topic = f"test-cluster-reader-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"reader-test-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        events = {name: make_event(name) for name in ("r1", "r2", "r3", "r4")}

        async def send(*names: str) -> None:
            for key, value, headers in build_records([events[n] for n in names]):
                await producer.send(topic, value, key=key, headers=headers)

        async with producer.transaction():
            await send("r1", "r2")
        await producer.begin_transaction()
        await send("r3")
        await producer.abort_transaction()
        await producer.begin_transaction()
        await send("r4")  # left open while the reader catches up
        async with CommittedReader(kafka_bootstrap, topic) as reader:
            await wait_for(reader.caught_up, 20, "the reader at the last stable offset")
            assert sorted(e["subject"] for e in reader.events()) == ["r1", "r2"]
            await producer.commit_transaction()
            await wait_for(lambda: len(reader.records) == 3, 20, "the committed r4")
            before = reader.events()
            async with producer.transaction():
                await send("r1")  # the same change again
            await wait_for(lambda: len(reader.records) == 4, 20, "the repeated r1")
            got = reader.events()
    finally:
        await producer.stop()
    assert sorted(e["subject"] for e in got) == ["r1", "r1", "r2", "r4"]
    assert duplicate_ids(got) == {("project-a", events["r1"].id): 2}
    assert duplicate_ids(before) == {}
    assert events["r1"].id != make_event("r1", ChangeKind.DELETED).id
