"""Durations ("500ms", "30s", "5m") and byte sizes ("64KiB") as they are written in configuration.

``Duration`` and ``ByteSize`` are reusable pydantic types: a ``Duration`` field holds float seconds,
a ``ByteSize`` field holds an int number of bytes. The parse functions are usable on their own.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
# One or more number+unit parts ("1h30m"), or a bare number of seconds.
DURATION_PATTERN = rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}(?:ms|s|m|h|d))+)\s*$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_HINT = "use 500ms, 30s, 5m or seconds"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
SIZE_PATTERN = r"^\s*\d+\s*(?:[bB]|[kKmMgG][iI]?[bB])?\s*$"
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_SIZE_HINT = "use 64KiB, 1MiB or a number of bytes"


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "500ms", "30s", "5m", "1h", "2d", "1h30m"."""
    if isinstance(value, bool):
        raise PydanticCustomError("invalid_duration", f"invalid duration ({_DURATION_HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.match(value):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts) if parts else float(text)
    else:
        raise PydanticCustomError(
            "invalid_duration",
            "invalid duration '{value}' ({hint})",
            {"value": _shown(value), "hint": _DURATION_HINT},
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise PydanticCustomError(
            "invalid_duration", "invalid duration '{value}' (must be a finite, non-negative time)",
            {"value": _shown(value)},
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds`` ("5ms", "30s", "10m", "1h30m"), for logs and summaries."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        whole = int(rest // size)
        if whole:
            out.append(f"{whole}{unit}")
            rest -= whole * size
    if rest or not out:
        out.append(f"{round(rest, 3):g}s")
    return "".join(out)


def parse_byte_size(value: Any) -> int:
    """Bytes from an int or a string like "512", "64KiB", "1MiB", "1MB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    raise PydanticCustomError(
        "invalid_size", "invalid size '{value}' ({hint})",
        {"value": _shown(value), "hint": _SIZE_HINT},
    )


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "a duration: seconds, or a string such as 500ms, 30s, 5m, 1h, 2d, 1h30m",
        }
    ),
]
"""Float seconds, written as a number of seconds or "500ms", "30s", "5m", "1h", "2d"."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "a size in bytes: an integer, or a string such as 64KiB, 1MiB, 1MB",
        }
    ),
]
"""Int bytes, written as a number or "64KiB", "1MiB", "1MB"."""
