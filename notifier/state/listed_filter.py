"""A compact in-memory filter of the ids a resync listed: "certainly not listed" or "maybe".

Every resync batch is checked for an id the snapshot already listed (the service started the
snapshot over). Asking SQLite about every listed id costs a random index probe per id, most of
them into the written staging set; nearly every answer is "no". ``ListedFilter`` (a Bloom
filter with one bit per id in a bit array of 32-64 bits per id, 4-8 MB for a million ids) says
"no" for almost all of them in memory, so only the "maybe"s (1.5-3% of the others, a few
percent more once it outgrows its first size, and the real repeats) are asked of the store.
It never says "no" for an id it was given, so the answer stays exact.

Ids are hashed with Python's own string hash (cached on the string object, which the page's
sets already computed); it differs between processes, so a filter lives only in the process
that built it, like the held staging ids.
"""

from __future__ import annotations

from collections.abc import Iterable

_BITS_PER_ID = 32
_MIN_CAPACITY = 16_384


class _Layer:
    __slots__ = ("bits", "capacity", "count", "mask")

    def __init__(self, capacity: int) -> None:
        size = 1 << max(3, (capacity * _BITS_PER_ID - 1).bit_length())  # a power of two
        self.bits = bytearray(size >> 3)
        self.mask = size - 1
        self.capacity = capacity
        self.count = 0


class ListedFilter:
    """Ids added so far: ``might_contain`` is False only for an id never added.

    Sized for ``expected`` ids; past that it adds layers of twice the capacity (a scalable Bloom
    filter), so the false-positive rate stays bounded however many ids come."""

    def __init__(self, expected: int = 0) -> None:
        self._layers = [_Layer(max(_MIN_CAPACITY, expected + expected // 8))]

    def add_all(self, rel_ids: Iterable[str]) -> None:
        layer = self._layers[-1]
        bits, mask = layer.bits, layer.mask
        added = 0
        for rid in rel_ids:
            a = hash(rid) & mask
            bits[a >> 3] |= 1 << (a & 7)
            added += 1
        layer.count += added
        if layer.count >= layer.capacity:
            self._layers.append(_Layer(layer.capacity * 2))

    def maybe_listed(self, rel_ids: Iterable[str]) -> list[str]:
        """The ids of ``rel_ids`` that may have been added (all that were, a few that were not)."""
        layers = [(layer.bits, layer.mask) for layer in self._layers]
        out: list[str] = []
        hit = out.append
        for rid in rel_ids:
            h = hash(rid)
            for bits, mask in layers:
                a = h & mask
                if bits[a >> 3] >> (a & 7) & 1:
                    hit(rid)
                    break
        return out

    def __len__(self) -> int:
        return sum(layer.count for layer in self._layers)
