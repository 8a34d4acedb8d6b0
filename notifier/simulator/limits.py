"""Per-user sliding-window rate limit and the simulator's request statistics."""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

WINDOW = 60.0
SNAPSHOTS_KEPT = 10_000  # entries of Stats.snapshots_finished (the latest)


class SlidingWindowLimiter:
    """At most ``limit`` accepted requests per key in any ``window`` seconds."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self.peak: dict[str, int] = {}

    def acquire(self, key: str, limit: int, now: float) -> int | None:
        """Record a request and return None, or refuse it with whole seconds to wait."""
        hits = self._hits.setdefault(key, deque())
        cutoff = now - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if limit > 0 and len(hits) >= limit:
            frees_at = hits[len(hits) - limit] + self.window
            return max(1, math.ceil(frees_at - now))
        hits.append(now)
        if len(hits) > self.peak.get(key, 0):
            self.peak[key] = len(hits)
        return None

    def in_window(self, key: str, now: float) -> int:
        hits = self._hits.get(key)
        return 0 if hits is None else sum(1 for t in hits if t > now - self.window)

    def reset(self) -> None:
        self._hits.clear()
        self.peak.clear()


class Stats:
    """Counters exposed at ``GET /_sim/stats`` and as ``state.stats``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.by_user: Counter[str] = Counter()
        self.regions: Counter[str] = Counter()
        self.rate_limited = 0
        self.faults_injected = 0
        self.malformed_injected = 0
        self.unauthorized = 0
        self.sync_filters_ignored = 0
        self.sync_status_tokens = 0
        # (container, query key, watermark) of each snapshot whose last page was served: what
        # a test needs to tell which relationships a resync could list (those alive at it).
        self.snapshots_finished: deque[tuple[str, str, int]] = deque(maxlen=SNAPSHOTS_KEPT)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "statuses": dict(self.statuses),
            "by_user": dict(self.by_user),
            "regions": dict(self.regions),
            "rate_limited": self.rate_limited,
            "faults_injected": self.faults_injected,
            "malformed_injected": self.malformed_injected,
            "unauthorized": self.unauthorized,
            "sync_filters_ignored": self.sync_filters_ignored,
            "sync_status_tokens": self.sync_status_tokens,
            "snapshots_finished": len(self.snapshots_finished),
        }
