"""GrantOrder (pure, time passed in): sync pages first, checks owed their reserve share, the
window never exceeded; starvation looked at in both directions."""

from __future__ import annotations

import math
from collections.abc import Iterable

from notifier.core.budget import SHARE_HORIZON, GrantOrder, Priority, TokenBucket


def serve(order: GrantOrder, arrivals: Iterable[tuple[float, Priority]], until: float
          ) -> list[tuple[float, Priority, float]]:
    """Requests arriving at the given times (added before the grants of that instant), each
    granted in ``order``'s order as soon as it lets one go: (grant time, priority, seconds
    waited) per grant, in grant order."""
    todo = sorted(arrivals)
    asked: dict[int, tuple[float, Priority]] = {}
    out: list[tuple[float, Priority, float]] = []
    now, k = 0.0, 0
    while now <= until:
        while k < len(todo) and todo[k][0] <= now:
            t, p = todo[k]
            asked[order.add(p)] = (t, p)
            k += 1
        granted, wait = order.grant(now)
        for ticket, _ in granted:
            t, p = asked.pop(ticket)
            out.append((now, p, now - t))
        nxt = todo[k][0] if k < len(todo) else math.inf
        now = min(nxt, now + wait)
        if now == math.inf:
            break
    return out


def tickets(order: GrantOrder, now: float) -> list[int]:
    """The tickets ``order`` grants at ``now``, in order (their bucket grants dropped)."""
    granted, _ = order.grant(now)
    return [ticket for ticket, _ in granted]


def test_each_ticket_comes_with_its_grant_of_the_bucket():
    bucket = TokenBucket(120, burst=3, window=61.0)
    order = GrantOrder(bucket)
    assert order.take_now("sync", 0.0) == 1  # nobody waits: granted at once, grant 1
    a, b = order.add("status"), order.add("sync")
    granted, _ = order.grant(0.0)
    assert granted == [(b, 2), (a, 3)]  # the page first; each with the grant it took
    assert bucket.granted == 3


def windows(grants: list[float], window: float = 61.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(grants):
        while grants[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def bucket(reserve: float = 0.2) -> TokenBucket:
    return TokenBucket(120, reserve=reserve, window=61.0)


def test_a_page_goes_before_the_checks_waiting():
    order = GrantOrder(bucket())
    for _ in range(10):  # the burst
        order.add("status")
    assert len(tickets(order, 0.0)) == 10
    checks = [order.add("status") for _ in range(5)]
    page = order.add("sync")
    granted, wait = order.grant(0.0)
    assert granted == []
    assert 0 < wait <= 0.51  # the next token
    assert tickets(order, wait) == [page]  # not behind the five checks
    assert tickets(order, wait + 0.51) == checks[:1]  # then the checks, in their order


def test_fifo_within_a_priority():
    order = GrantOrder(TokenBucket(120, burst=1, window=61.0))
    added = [order.add("status") for _ in range(4)]
    got = [t for k in range(8) for t in tickets(order, k * 0.6)]
    assert got == added


def test_checks_paced_over_the_budget_never_go_before_a_page():
    # Checks arriving at three times what the budget grants (the pace may exceed it: pages
    # go first), a page every 3 s: every page goes at the first grant after it arrived.
    checks = [(i / 6.0, "status") for i in range(6 * 600)]
    pages = [(0.1 + 3.0 * i, "sync") for i in range(200)]
    out = serve(GrantOrder(bucket()), [*checks, *pages], until=600.0)
    assert sum(1 for _, p, _ in out if p == "sync") == 200
    for k, (t, p, waited) in enumerate(out):
        if p == "sync":  # no check granted between its arrival and its grant
            assert not [g for g, q, _ in out[:k] if q == "status" and g >= t - waited]
    grants = [t for t, _, _ in out]
    assert windows(grants) <= 120
    # And the checks take every grant the pages leave: the budget is spent in full.
    assert sum(1 for t in grants if 61.0 <= t < 122.0) == 120


def test_a_burst_of_pages_holds_checks_back_for_a_few_grants_only():
    # A thousand pages at once (a bootstrap), a check every 3 s: the checks get their reserve
    # share of every SHARE_HORIZON grants while they wait, not what the window leaves over.
    pages = [(0.0, "sync")] * 1000
    checks = [(3.0 * i, "status") for i in range(100)]
    out = serve(GrantOrder(bucket(0.2)), [*pages, *checks], until=300.0)
    check_waits = [w for _, p, w in out if p == "status"]
    assert len(check_waits) == 100
    assert max(check_waits) <= SHARE_HORIZON * 0.52  # about 4 s at 2 grants a second
    # Pages still get most of the budget, and never more than 1 - reserve of a window.
    sync_times = [t for t, p, _ in out if p == "sync"]
    assert windows(sync_times) <= 96
    assert windows([t for t, _, _ in out]) <= 120
    assert len(sync_times) >= 0.75 * len(out)


def test_pages_alone_are_held_by_the_reserve_and_checks_pass_them():
    order = GrantOrder(TokenBucket(4, burst=4, reserve=0.5, window=1.0))
    a, b, c = (order.add("sync") for _ in range(3))
    assert tickets(order, 0.0) == [a, b]  # the sync limit: 2 of 4 per window
    check = order.add("status")
    assert tickets(order, 0.1) == [check]  # not behind the page the reserve holds
    assert tickets(order, 1.0) == [c]


def test_checks_and_pages_both_flowing_share_the_budget():
    # Both want everything: checks get about the reserve share, pages the rest.
    checks = [(i / 4.0, "status") for i in range(4 * 300)]
    pages = [(i / 4.0, "sync") for i in range(4 * 300)]
    out = serve(GrantOrder(bucket(0.2)), [*checks, *pages], until=300.0)
    late = [p for t, p, _ in out if 61.0 <= t < 300.0]
    share = late.count("status") / len(late)
    assert 0.18 <= share <= 0.25
    assert windows([t for t, _, _ in out]) <= 120


def test_removed_request_leaves_the_line():
    order = GrantOrder(TokenBucket(120, burst=1, window=61.0))
    order.add("status")
    order.grant(0.0)
    first, second = order.add("sync"), order.add("sync")
    order.remove(first)
    order.remove(first)  # twice: nothing
    assert len(order) == 1
    assert tickets(order, 1.0) == [second]
    assert order.grant(2.0) == ([], math.inf)


def test_a_request_is_taken_at_once_only_when_nobody_waits_and_counts_in_the_share():
    order = GrantOrder(TokenBucket(4, burst=2, reserve=0.5, window=1.0), horizon=2)
    assert order.take_now("status", 0.0)  # room, nobody waiting: granted, no ticket
    assert order.take_now("status", 0.0)
    assert not order.take_now("status", 0.0)  # the burst is spent: it must queue
    check = order.add("status")
    page = order.add("sync")
    # Someone waits: a newcomer queues even where the bucket has room again.
    assert not order.take_now("sync", 10.0)
    assert len(order) == 2
    # The two checks taken at once filled the horizon: the owed share is met, pages first.
    assert tickets(order, 10.0) == [page, check]
