"""State a work partition holds for streams the configuration does not put there any more.

A stream's rows live in the partition of the credential that polls it. Two configuration
changes leave rows behind: a subscription removed (its streams are *orphans*, as in a single
process) and a subscription whose credentials changed so that a stream now hashes onto another
partition (*moved*: that partition's owner has no state for it and bootstraps it anew, created
events again with the same ids; deletions made in between are not reported, see
docs/cluster.md for carrying the state over). Either way the rows in the old partition are
never polled again.

A restore does not apply them (they would sit in the cache outside any partition's wipe, and
a stream moved back onto this replica would mix two states); it collects their record keys
here instead. The owner then marks each stray stream with a record of its own, key
``["cluster_stray", subscription, container_id, null]``, value ``{"since": time}`` (a table no
release has, so every restore skips it), and tombstones every key of the stream once
``state.orphan_retention`` has passed since: the single process's rule for orphans, with the
time kept in the topic so that it survives rebalances. A stream configured here again is no
stray: its rows are restored and its marker tombstoned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import BadRecord, RowKey, decode_row, encode_key, encode_row
from notifier.cluster.txn import PartitionTxn, StateRecord
from notifier.errors import PartitionLostError, SinkError

log = logging.getLogger(__name__)

MARKER = "cluster_stray"
# Seconds between looks at strays not yet due (a partition owned for days meets its deadline).
RECHECK = 3600.0
# Subscriptions named in the warning (the count says the rest).
_NAMED = 5

StreamKey = tuple[str, str]


@dataclass
class Stray:
    """One stray stream of the partition: its live record keys, where it went."""

    moved_to: int | None  # the partition its credential hashes onto now; None: not configured
    keys: set[bytes] = field(default_factory=set)  # never empty (see Strays.take)


@dataclass
class Strays:
    """What a restore of ``partition`` left out, collected record by record (``take``)."""

    partition: int
    work: WorkMap
    streams: dict[StreamKey, Stray] = field(default_factory=dict)
    markers: dict[StreamKey, float] = field(default_factory=dict)

    def take(self, key: RowKey | None, raw_key: bytes, raw_value: bytes | None) -> bool:
        """True if the record is a marker or a row of a stray stream (then noted, not to be
        applied); False for every other record."""
        if key is None or key.subscription is None or key.container_id is None:
            return False
        stream = (key.subscription, key.container_id)
        if key.table == MARKER:
            self.markers.pop(stream, None)
            since = None if raw_value is None else _since(raw_value)
            if since is not None:
                self.markers[stream] = since
            return True
        where = self.work.of_stream(*stream)
        if where == self.partition:
            return False
        stray = self.streams.get(stream)
        if raw_value is not None:
            if stray is None:
                stray = self.streams[stream] = Stray(where)
            stray.keys.add(raw_key)
        elif stray is not None:  # a tombstone: the stream is stray as long as a row is left
            stray.keys.discard(raw_key)
            if not stray.keys:
                del self.streams[stream]
        return True

    def settle(self, now: float, retention: float) -> tuple[list[StateRecord], list[StreamKey]]:
        """The records that bring the topic in line (markers for new strays, tombstones for
        strays past ``retention`` and for markers of streams that are no strays any more), and
        the streams dropped. Forgets what it drops: call again later for the rest."""
        records: list[StateRecord] = []
        dropped: list[StreamKey] = []
        for stream in [s for s in self.markers if s not in self.streams]:
            del self.markers[stream]
            records.append((marker_key(stream), None, []))
        for stream, stray in list(self.streams.items()):
            since = self.markers.get(stream)
            if since is None:
                self.markers[stream] = now
                records.append((marker_key(stream), encode_row({"since": now}), []))
            elif now - since >= retention:
                records.extend((k, None, []) for k in sorted(stray.keys))
                records.append((marker_key(stream), None, []))
                del self.streams[stream], self.markers[stream]
                dropped.append(stream)
        return records, dropped

    def next_drop(self, retention: float) -> float | None:
        """When the first stray is due to be dropped (None: no stray is marked)."""
        due = [self.markers[s] + retention for s in self.streams if s in self.markers]
        return min(due) if due else None

    def describe(self, retention: float) -> str:
        """One line for the log: the stray streams by subscription, and what happens to them."""
        removed: dict[str, int] = {}
        moved: dict[str, set[int]] = {}
        for (sub, _), stray in self.streams.items():
            if stray.moved_to is None:
                removed[sub] = removed.get(sub, 0) + 1
            else:
                moved.setdefault(sub, set()).add(stray.moved_to)
        parts = [f"subscription {sub!r} ({n} stream(s)): removed from the configuration"
                 for sub, n in sorted(removed.items())]
        parts += [f"subscription {sub!r}: its credentials put its streams in work partition(s) "
                  f"{', '.join(map(str, sorted(ps)))} now, where they are bootstrapped anew "
                  "(created events again, same ids; deletions made meanwhile are not reported)"
                  for sub, ps in sorted(moved.items())]
        more = f"; and {len(parts) - _NAMED} more subscription(s)" if len(parts) > _NAMED else ""
        return (f"work partition {self.partition} holds the state of {len(self.streams)} "
                f"stream(s) the configuration does not put there: {'; '.join(parts[:_NAMED])}"
                f"{more}. Not restored nor polled; dropped from the state topic "
                f"{_days(retention)} after first found (state.orphan_retention), unless the "
                "configuration takes them back before")


def marker_key(stream: StreamKey) -> bytes:
    return encode_key(RowKey(MARKER, stream[0], stream[1], None))


def _since(raw: bytes) -> float | None:
    """A marker's time; None if this release cannot read it (the stream is marked anew)."""
    try:
        row = decode_row(raw)
    except BadRecord:
        return None
    since = None if row is None else row.get("since")
    return float(since) if isinstance(since, int | float) else None


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} day(s)" if seconds >= 86400 else f"{seconds:g} s"


async def tend(strays: Strays, txn: PartitionTxn, topic: str, retention: float,
               changed: Callable[[], None], *, clock: Callable[[], float] = time.time) -> None:
    """Keep a partition's strays in line with the topic while it is owned: mark the new ones,
    drop each once due; ``changed`` after every change of their number. Returns when none is
    left, or the partition is lost (its next owner restores and tends them)."""
    if strays.streams:
        log.warning("%s", strays.describe(retention))
    while strays.streams or strays.markers:
        records, dropped = strays.settle(clock(), retention)
        if records:
            try:
                async with txn.scope():
                    await txn.send_records(topic, records, partition=strays.partition)
            except (PartitionLostError, SinkError) as err:
                log.warning("work partition %d: stray streams not settled (%s); its next "
                            "restore tries again", strays.partition, err)
                return
        if dropped:
            log.info("work partition %d: dropped the state of %d stray stream(s) past "
                     "state.orphan_retention: %s", strays.partition, len(dropped),
                     ", ".join(f"{sub}/{cid}" for sub, cid in dropped[:_NAMED])
                     + (" ..." if len(dropped) > _NAMED else ""))
        changed()
        due = strays.next_drop(retention)
        if due is None:
            return
        await asyncio.sleep(min(max(due - clock(), 0.5), RECHECK))
