"""UUID helpers: relationship and container ids are kept as 128-bit ints internally."""

from __future__ import annotations

import random
import uuid


def fmt_uuid(value: int) -> str:
    """The canonical lower-case 8-4-4-4-12 form."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_uuid(text: object) -> int | None:
    """The 128-bit value of a UUID string, or None if it is not one."""
    if not isinstance(text, str) or len(text) != 36:
        return None
    try:
        return uuid.UUID(text).int
    except ValueError:
        return None


def random_uuid_int(rng: random.Random) -> int:
    """A version-4 (random) UUID as an int, drawn from ``rng`` (reproducible with a seed)."""
    x = rng.getrandbits(128)
    x = (x & ~(0xF << 76)) | (0x4 << 76)
    return (x & ~(0x3 << 62)) | (0x2 << 62)
