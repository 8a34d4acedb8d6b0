"""Retry delays: capped exponential backoff with full jitter, and HTTP ``Retry-After`` parsing.

Pure functions of their inputs (the random draw and the current time are passed in), so the
schedule is testable from tables.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_DELTA_SECONDS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
# 2**64 times any sane base is far above any cap; stopping there avoids float overflow.
_MAX_EXPONENT = 64


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The largest delay ``backoff_delay`` can return: ``min(cap, base * 2**attempt)``."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    return min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))


def backoff_delay(attempt: int, *, base: float, cap: float, rand: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniform draw in
    ``[0, min(cap, base * 2**attempt))``. ``rand`` is that draw's unit value, in ``[0, 1)``.
    """
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    return rand * backoff_ceiling(attempt, base=base, cap=cap)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value, or None if unusable.

    Accepts delta-seconds (``"25"``; decimals are tolerated) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A time in the past or a negative delay gives 0.
    Anything else (empty, garbage, ``nan``, ``1e3``) gives None so the caller falls back to backoff.
    ``now`` is the current wall-clock time; a naive datetime is taken as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    return _parse_http_date(text, now)


def _parse_http_date(text: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
