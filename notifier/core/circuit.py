"""A per-endpoint circuit breaker, pure: every decision takes ``now`` as an argument.

    closed ──(failure_threshold consecutive failures)──► open
    open ──(reset_after elapsed; the next ``allow`` claims the single probe)──► half-open
    half-open ──(probe succeeds)──► closed
    half-open ──(probe fails)──► open (the wait starts again)

While open, a dead endpoint costs nothing: no call is made, no attempt is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Counts consecutive failures of one endpoint and decides whether a call may go out."""

    failure_threshold: int
    reset_after: float
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.reset_after < 0:
            raise ValueError("reset_after must not be negative")

    def allow(self, now: float) -> bool:
        """May a call go out now? In half-open only one (the probe) is let through."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if now - self.opened_at < self.reset_after:
                return False
            self.state = CircuitState.HALF_OPEN
            self.probe_in_flight = False
        if self.probe_in_flight:
            return False
        self.probe_in_flight = True
        return True

    def record_success(self) -> None:
        """The endpoint answered as a healthy endpoint does: close the circuit."""
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.probe_in_flight = False

    def record_failure(self, now: float) -> None:
        """A call failed (5xx, timeout, refused...): count it, open at the threshold."""
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self.failures >= self.failure_threshold
        ):
            self.state = CircuitState.OPEN
            self.opened_at = now
            self.probe_in_flight = False

    def retry_at(self) -> float | None:
        """When an open circuit lets a probe through; None unless open."""
        if self.state is CircuitState.OPEN:
            return self.opened_at + self.reset_after
        return None
