"""The per-endpoint circuit breaker, as a state table."""

from __future__ import annotations

import pytest

from notifier.core.circuit import CircuitBreaker, CircuitState

# Steps: ("ok", t) success, ("fail", t) failure, ("allow", t, expected) a gate check.
Step = tuple[object, ...]

CASES: list[tuple[str, list[Step], CircuitState]] = [
    ("fresh breaker is closed", [("allow", 0.0, True)], CircuitState.CLOSED),
    (
        "below the threshold stays closed",
        [("fail", 0.0), ("fail", 1.0), ("allow", 1.0, True)],
        CircuitState.CLOSED,
    ),
    (
        "threshold consecutive failures open it",
        [("fail", 0.0), ("fail", 1.0), ("fail", 2.0), ("allow", 2.5, False)],
        CircuitState.OPEN,
    ),
    (
        "a success resets the count",
        [("fail", 0.0), ("fail", 1.0), ("ok", 1.5), ("fail", 2.0), ("fail", 3.0),
         ("allow", 3.0, True)],
        CircuitState.CLOSED,
    ),
    (
        "still open before reset_after",
        [("fail", 0.0), ("fail", 0.0), ("fail", 10.0), ("allow", 19.9, False)],
        CircuitState.OPEN,
    ),
    (
        "after reset_after one probe goes through, the next waits",
        [("fail", 0.0), ("fail", 0.0), ("fail", 0.0), ("allow", 10.0, True),
         ("allow", 10.0, False), ("allow", 11.0, False)],
        CircuitState.HALF_OPEN,
    ),
    (
        "a successful probe closes it",
        [("fail", 0.0), ("fail", 0.0), ("fail", 0.0), ("allow", 10.0, True), ("ok", 10.5),
         ("allow", 10.5, True), ("allow", 10.5, True)],
        CircuitState.CLOSED,
    ),
    (
        "a failed probe reopens it and restarts the wait",
        [("fail", 0.0), ("fail", 0.0), ("fail", 0.0), ("allow", 10.0, True), ("fail", 12.0),
         ("allow", 21.9, False), ("allow", 22.0, True)],
        CircuitState.HALF_OPEN,
    ),
    (
        "late failures of calls made before opening do not extend the wait",
        [("fail", 0.0), ("fail", 0.0), ("fail", 0.0), ("fail", 5.0), ("allow", 10.0, True)],
        CircuitState.HALF_OPEN,
    ),
]


@pytest.mark.parametrize(("steps", "final"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_state_table(steps: list[Step], final: CircuitState) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_after=10.0)
    for step in steps:
        match step:
            case ("ok", _):
                breaker.record_success()
            case ("fail", float(t)):
                breaker.record_failure(t)
            case ("allow", float(t), bool(expected)):
                assert breaker.allow(t) is expected, step
            case _:
                raise AssertionError(step)
    assert breaker.state is final


def test_retry_at_only_when_open() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after=30.0)
    assert breaker.retry_at() is None
    breaker.record_failure(100.0)
    assert breaker.retry_at() == 130.0
    assert breaker.allow(130.0)
    assert breaker.retry_at() is None


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, -1.0)])
def test_rejects_nonsense(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="must"):
        CircuitBreaker(failure_threshold=threshold, reset_after=reset)
