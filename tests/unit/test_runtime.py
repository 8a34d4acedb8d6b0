"""The scheduler's bookkeeping, from tables: syncStatus answers, passes, log and write batching."""

from __future__ import annotations

import pytest

from notifier.runtime import CheckTimes, LogThrottle, PassTimer, match_status
from notifier.source.models import SyncStatusFailure, SyncStatusResponse, SyncStatusResult


def ok(ref: str | None, *, more: bool = False, overwrite: bool = False) -> SyncStatusResult:
    return SyncStatusResult(sync_token="t", reference_id=ref, more_data=more, overwrite=overwrite)


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
    assert times.take() == ([("a", "1"), ("b", "1"), ("c", "1")], 50.0, [])
    times.note([("d", "1")], 52.0)
    assert times.take(force=True) == ([("d", "1")], 52.0, [])


def test_a_check_of_every_stream_of_a_group_is_one_stamp_and_a_partial_one_a_stamp_a_stream():
    from notifier.core.plan_queue import GroupPlan
    from notifier.runtime import Group, StreamRuntime
    from notifier.stream import StreamSpec

    streams = [StreamRuntime(StreamSpec(sub, "c1", ("cred",), ())) for sub in ("b", "a", "c")]
    group = Group("c1", streams, GroupPlan("c1", 1, 60.0))
    times = CheckTimes(Ticks())
    times.note_check(group, streams, list(streams), 50.0)
    times.note_check(group, streams, streams[:2], 51.0)  # "c" quarantined, say
    times.note_check(group, streams, list(reversed(streams)), 52.0)  # the same stamp
    assert times.take(force=True) == ([("b", "c1"), ("a", "c1")], 50.0,
                                      [("c1", ("a", "b", "c"))])
    assert group.stamp_key(streams) is group.stamp_key(streams)  # kept while the list is
    grown = [*streams, StreamRuntime(StreamSpec("d", "c1", ("cred",), ()))]
    group.streams = grown  # a stream added at run time: a new list, a new key
    times.note_check(group, grown, grown, 53.0)
    times.note_check(group, streams, streams, 54.0)  # a check that began before it came
    assert times.take(force=True) == ([], 53.0, [("c1", ("a", "b", "c", "d")),
                                                 ("c1", ("a", "b", "c"))])
    alone = Group("c2", streams[:1], GroupPlan("c2", 1, 60.0))  # one stream: its own row
    times.note_check(alone, alone.streams, alone.streams, 55.0)
    assert times.take(force=True) == ([("b", "c2")], 55.0, [])


def test_freshness_splits_ages_by_busy_and_quiet_groups_and_keeps_each_subscriptions_worst():
    from types import SimpleNamespace as NS

    from notifier.runtime import freshness

    def stream(sub: str, checked: float | None, quarantined_until: float = 0.0) -> NS:
        return NS(spec=NS(subscription=sub), last_checked=checked,
                  quarantined_until=quarantined_until)

    groups = {
        "busy": NS(container_id="busy", streams=[stream("a", 90.0), stream("b", None)],
                   ages=None, checking=0),
        "quiet": NS(container_id="quiet", streams=[
            stream("a", 40.0), stream("c", 130.0),  # checked "after" now: age 0, not negative
            stream("d", 10.0, quarantined_until=150.0)],  # quarantined: not an age
            ages=None, checking=0),
    }
    planner = NS(is_busy=lambda cid, now: cid == "busy")
    f = freshness(groups, planner, 100.0, 20.0)  # type: ignore[arg-type]
    assert f.busy == [10.0, 80.0]  # never checked: as old as the process
    assert f.quiet == [60.0, 0.0]
    assert f.quarantined == 1
    assert f.stalest == 80.0
    assert f.per_subscription == {"a": 60.0, "b": 80.0, "c": 0.0}


def _freshness_by_reading_every_stream(groups, planner, now, started_at):  # type: ignore[no-untyped-def]
    """The tick as it was before it kept what it read (the reference)."""
    from notifier.runtime import Freshness

    out = Freshness()
    for g in groups.values():
        add = out.busy if planner.is_busy(g.container_id, now) else out.quiet
        for s in g.streams:
            if s.quarantined_until > now:
                out.quarantined += 1
                continue
            age = max(now - (started_at if s.last_checked is None else s.last_checked), 0.0)
            add.append(age)
            if age >= out.per_subscription.get(s.spec.subscription, 0.0):
                out.per_subscription[s.spec.subscription] = age
    out.stalest = max(max(out.busy, default=0.0), max(out.quiet, default=0.0))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_freshness_that_keeps_what_it_read_reports_what_reading_every_stream_does(seed: int):
    """Ticks over groups changed between them as the scheduler changes them (checks mark
    the group touched; quarantines end by themselves; streams are added and removed; a tick
    lands mid-check): every tick equals the reference, per-subscription order included."""
    import random
    from types import SimpleNamespace as NS

    from notifier.runtime import Group, StreamRuntime, freshness
    from notifier.stream import StreamSpec

    rnd = random.Random(seed)
    cids = [f"c{i}" for i in range(12)]
    subs = [f"s{i}" for i in range(15)]

    def runtime(cid: str) -> StreamRuntime:
        rt = StreamRuntime(StreamSpec(subscription=rnd.choice(subs), container_id=cid,
                                      credentials=("x",), sinks=()))
        rt.last_checked = rnd.choice([None, rnd.uniform(0, 100)])
        if rnd.random() < 0.2:
            rt.quarantined_until = rnd.uniform(50, 300)
        return rt

    groups = {cid: Group(cid, [runtime(cid) for _ in range(rnd.randint(1, 6))],
                         None)  # type: ignore[arg-type]
              for cid in cids}
    busy = set(rnd.sample(cids, 4))
    planner = NS(is_busy=lambda cid, now: cid in busy)
    now, started = 100.0, 5.0
    for _ in range(40):
        now += rnd.choice([0.0, 5.0, 5.0, 37.5, -1.0])  # the clock may step back
        for g in rnd.sample(list(groups.values()), 3):
            action = rnd.random()
            if action < 0.5:  # a check: new times, maybe a quarantine; touched after it
                for s in g.streams:
                    s.last_checked = now - rnd.uniform(0, 3)
                    s.quarantined_until = now + 40 if rnd.random() < 0.1 else 0.0
                g.touched()
            elif action < 0.65:
                g.streams = [*g.streams, runtime(g.container_id)]
            elif action < 0.8 and len(g.streams) > 1:
                g.streams = g.streams[1:]
            elif action < 0.9:  # a check under way: changed, not yet touched
                g.checking += 1
                g.streams[0].last_checked = now
            elif g.checking:
                g.checking -= 1
                g.touched()
        if rnd.random() < 0.2:
            busy ^= {rnd.choice(cids)}  # a re-plan moves a group between busy and quiet
        got = freshness(groups, planner, now, started)  # type: ignore[arg-type]
        want = _freshness_by_reading_every_stream(groups, planner, now, started)
        assert got == want
        assert list(got.per_subscription) == list(want.per_subscription)


def test_a_runtime_loads_the_same_from_a_stream_state_and_its_start_up_fields():
    from notifier.runtime import StreamRuntime
    from notifier.state.base import StreamCheckState, StreamState
    from notifier.stream import StreamSpec

    spec = StreamSpec(subscription="s", container_id="c", credentials=("x",), sinks=())
    for token, resync, reason in (("t", False, None), (None, True, "bad_token")):
        full = StreamState("s", "c", token, None, resync, 12.5, None, None, 0, 40.0, reason, 2)
        light = StreamCheckState("s", "c", token, int(resync), 12.5, 40.0, reason, 2)
        a, b = StreamRuntime(spec), StreamRuntime(spec)
        a.load(full)
        b.load(light)
        assert a == b
        assert b.in_resync is resync
        assert b.force_resync is (reason == "bad_token")
        assert (b.token, b.last_checked, b.quarantined_until, b.failures) == (token, 12.5, 40.0, 2)


def test_reference_ids_and_an_answer_in_order_sorted_by_position():
    from notifier.runtime import reference_ids

    assert reference_ids(3) == ["0", "1", "2"]
    assert reference_ids(12)[10:] == ["10", "11"]
    assert reference_ids(2) == ["0", "1"]
    quiet = match_status(SyncStatusResponse([ok(str(i)) for i in range(12)], []), 12)
    assert (quiet.due, quiet.ok, quiet.rejected, quiet.answered) == ([], list(range(12)), [], 12)
    mixed = match_status(SyncStatusResponse(
        [ok("0", more=True), ok("1"), ok("2", overwrite=True)], []), 3)
    assert (mixed.due, mixed.ok, mixed.answered) == ([0, 2], [1], 3)
