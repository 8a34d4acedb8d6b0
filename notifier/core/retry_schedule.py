"""Webhook retry decisions: when a failed delivery is tried again, and how Retry-After is read.

Pure functions of their inputs (``now`` and the random draw are passed in). The schedule lists
the waits after each failed attempt: with ``[5s, 5m]`` attempt 1 fails → wait 5 s, attempt 2
fails → wait 5 min, attempt 3 fails → dead letter. So an event gets ``len(schedule) + 1``
attempts in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from notifier.core import backoff

# Like the Standard Webhooks example schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h after the previous attempt (about 27.6 hours of retries, 8 attempts).
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)

# A Retry-After longer than this is clamped: a receiver should not park events for days.
MAX_RETRY_AFTER = 3600.0
# Retry-After missing or unreadable on a 429: wait this long.
DEFAULT_RETRY_AFTER = 5.0


def next_delay(
    failed_attempts: int, schedule: Sequence[float], *, jitter: float = 0.1, draw: float = 0.5
) -> float | None:
    """Seconds to wait before the next attempt, or None when the event must be dead-lettered.

    ``failed_attempts`` counts the failures so far, this one included (1 after the first).
    ``draw`` in [0, 1) spreads the wait by ±``jitter`` (a fraction) so a receiver coming back
    is not hit by every event at the same instant; ``draw=0.5`` means no spread.
    """
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts at least the failure being handled")
    if failed_attempts > len(schedule):
        return None
    base = max(0.0, float(schedule[failed_attempts - 1]))
    return base * (1.0 + jitter * (2.0 * draw - 1.0))


def parse_retry_after(
    value: str | None, now: float, *, default: float = DEFAULT_RETRY_AFTER,
    maximum: float = MAX_RETRY_AFTER,
) -> float:
    """Seconds to wait from a webhook receiver's ``Retry-After`` (``now`` in epoch seconds):
    the upstream client's parser, with a default for a missing or unusable header and a cap."""
    seconds = backoff.parse_retry_after(value, now=datetime.fromtimestamp(now, UTC))
    return default if seconds is None else min(seconds, maximum)
