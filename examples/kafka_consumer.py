#!/usr/bin/env python3
"""Consume the notifier's relationship events from Kafka, each change once.

    pip install aiokafka
    python examples/kafka_consumer.py --bootstrap localhost:9092 --topic bim360.relationships \
        --group my-service --dedup-db ./seen.db

What a real consumer needs, in 100 lines:

- ``isolation_level="read_committed"``: in cluster mode the notifier writes events and its
  checkpoint in one Kafka transaction; a read-committed consumer never sees events of an
  aborted one.
- Both CloudEvents content modes: binary (attributes in ``ce_*`` headers, ``data`` as the value)
  and structured (the whole event as the value, ``content-type: application/cloudevents+json``).
- Delivery is at least once, so deduplicate on the event id (``ce_id``): every delivery of the
  same change carries the same id. Seen ids are kept in SQLite, in the same transaction as the
  work they guard, so a crash between handling and committing the offset repeats nothing.
- Offsets are committed only after the batch was handled (``enable_auto_commit=False``).

``handle()`` is where your code goes; here it prints one JSON line per new event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer

ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "snapshot",
              "partitionkey")


def to_event(headers: list[tuple[str, bytes]], value: bytes) -> dict[str, Any]:
    """The structured CloudEvent a record carries, in either content mode."""
    h = {k: v.decode() for k, v in headers}
    if h.get("content-type", "").startswith("application/cloudevents+json"):
        event: dict[str, Any] = json.loads(value)
        return event
    event = {a: h[f"ce_{a}"] for a in ATTRIBUTES if f"ce_{a}" in h}
    event["snapshot"] = event.get("snapshot") == "true"
    event["datacontenttype"] = h.get("content-type", "application/json")
    event["data"] = json.loads(value)
    return event


def handle(event: dict[str, Any]) -> None:
    """Your business logic. Here: one line per change on stdout."""
    print(json.dumps(event, sort_keys=True), flush=True)


def first_time(db: sqlite3.Connection, event_id: str) -> bool:
    """Record ``event_id``; False if it was seen before (a redelivery)."""
    cur = db.execute("INSERT OR IGNORE INTO seen (event_id) VALUES (?)", (event_id,))
    return cur.rowcount == 1


async def consume(args: argparse.Namespace) -> int:
    db = sqlite3.connect(args.dedup_db, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        isolation_level="read_committed", enable_auto_commit=False,
        auto_offset_reset="earliest")
    await consumer.start()
    handled = 0
    try:
        while args.max_events is None or handled < args.max_events:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches and args.exit_when_idle:
                break
            for records in batches.values():
                for record in records:
                    event = to_event(list(record.headers), record.value)
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        if first_time(db, event["id"]):
                            handle(event)
                            handled += 1
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
            if batches:
                await consumer.commit()  # only after the batch was handled
    finally:
        await consumer.stop()
        db.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--dedup-db", default="seen-events.db", help="SQLite file of seen ids")
    parser.add_argument("--max-events", type=int, default=None, help="stop after N new events")
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="stop when a poll returns nothing (for scripts and tests)")
    args = parser.parse_args()
    try:
        return asyncio.run(consume(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
