"""The scheduler's bookkeeping, from tables: syncStatus answers, passes, log and write batching."""

from __future__ import annotations

import pytest

from notifier.runtime import CheckTimes, LogThrottle, PassTimer, match_status
from notifier.source.models import SyncStatusFailure, SyncStatusResponse, SyncStatusResult


def ok(ref: str | None, *, more: bool = False, overwrite: bool = False) -> SyncStatusResult:
    return SyncStatusResult("t", ref, more, overwrite)


def refused(ref: str | None) -> SyncStatusFailure:
    return SyncStatusFailure("t", ref, "BAD_INPUT", "Invalid token", "expired")


@pytest.mark.parametrize(
    ("results", "errors", "n", "due", "fine", "rejected", "answered"),
    [
        ([ok("0"), ok("1", more=True), ok("2", overwrite=True)], [], 3, [1, 2], [0], [], 3),
        ([ok("0")], [refused("1")], 2, [], [0], [1], 2),
        ([ok("0")], [], 3, [], [0], [], 1),  # unanswered tokens: retried later
        ([ok("0"), ok("0", more=True)], [], 1, [], [0], [], 1),  # the first answer wins
        ([ok("7"), ok(None), ok("x")], [refused("9")], 2, [], [], [], 0),  # unknown refs
        ([ok("1")], [refused("1")], 2, [], [1], [], 1),  # a result beats a refusal
    ],
)
def test_match_status(results, errors, n, due, fine, rejected, answered):
    answer = match_status(SyncStatusResponse(results, errors), n)
    assert answer.due == due
    assert answer.ok == fine
    assert [i for i, _ in answer.rejected] == rejected
    assert all(why == "sync token rejected: Invalid token expired" for _, why in answer.rejected)
    assert answer.answered == answered


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_pass_is_as_many_checks_as_groups():
    clock = Ticks()
    timer = PassTimer(clock)
    clock.now += 4
    assert [timer.group_checked(3), timer.group_checked(3)] == [None, None]
    assert timer.group_checked(3) == 4.0
    clock.now += 1
    assert [timer.group_checked(3) for _ in range(3)] == [None, None, 1.0]
    assert [timer.group_checked(2), timer.group_checked(1)] == [None, 0.0]  # groups left


@pytest.mark.parametrize(
    ("offsets", "allowed"),
    [
        ([0, 1, 2], [0, None, None]),  # one line, the rest suppressed
        ([0, 30, 61, 62], [0, None, 1, None]),  # the next line counts what it hid
        ([0, 60, 120], [0, 0, 0]),
    ],
)
def test_log_throttle(offsets, allowed):
    clock = Ticks()
    throttle = LogThrottle(60.0, clock)
    got = []
    for t in offsets:
        clock.now = 1000.0 + t
        got.append(throttle.allow("kafka"))
    assert got == allowed
    assert throttle.allow("webhook") == 0  # per key


def test_check_times_are_batched_and_stamped_with_the_oldest():
    clock = Ticks()
    times = CheckTimes(clock)
    assert times.take() is None
    times.note([("a", "1"), ("b", "1")], 50.0)
    times.note([("a", "1"), ("c", "1")], 51.0)  # the first time of a key is kept
    assert times.take() is None  # not a second old yet
    clock.now += 1.0
    assert times.take() == ([("a", "1"), ("b", "1"), ("c", "1")], 50.0)
    times.note([("d", "1")], 52.0)
    assert times.take(force=True) == ([("d", "1")], 52.0)


def test_freshness_splits_ages_by_busy_and_quiet_groups_and_keeps_each_subscriptions_worst():
    from types import SimpleNamespace as NS

    from notifier.runtime import freshness

    def stream(sub: str, checked: float | None, quarantined_until: float = 0.0) -> NS:
        return NS(spec=NS(subscription=sub), last_checked=checked,
                  quarantined_until=quarantined_until)

    groups = {
        "busy": NS(container_id="busy", streams=[stream("a", 90.0), stream("b", None)]),
        "quiet": NS(container_id="quiet", streams=[
            stream("a", 40.0), stream("c", 130.0),  # checked "after" now: age 0, not negative
            stream("d", 10.0, quarantined_until=150.0)]),  # quarantined: not an age
    }
    planner = NS(is_busy=lambda cid, now: cid == "busy")
    f = freshness(groups, planner, 100.0, 20.0)  # type: ignore[arg-type]
    assert f.busy == [10.0, 80.0]  # never checked: as old as the process
    assert f.quiet == [60.0, 0.0]
    assert f.quarantined == 1
    assert f.stalest == 80.0
    assert f.per_subscription == {"a": 60.0, "b": 80.0, "c": 0.0}
