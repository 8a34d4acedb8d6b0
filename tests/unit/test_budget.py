"""Token-bucket arithmetic (tables) and the asyncio RequestBudget (FIFO, pause, reserve)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

import pytest

from notifier.core.budget import Priority, RequestBudget, TokenBucket

# -- pure arithmetic ----------------------------------------------------------------------------


def drain(
    bucket: TokenBucket,
    arrivals: list[float],
    priority: Priority = "sync",
    pauses: Sequence[tuple[float, float]] = (),
) -> list[float]:
    """Serve requests arriving at ``arrivals`` in FIFO order, each as soon as the bucket allows.

    ``pauses`` holds (at, until) pairs applied when the clock passes ``at``. Returns grant times.
    """
    pending = deque(sorted(arrivals))
    todo = sorted(pauses)
    grants: list[float] = []
    now = 0.0
    while pending:
        now = max(now, pending[0])
        while todo and todo[0][0] <= now:
            bucket.pause_until(todo.pop(0)[1])
        wait = bucket.take(now, priority=priority)
        if wait == 0:
            grants.append(now)
            pending.popleft()
        else:
            assert wait > 0
            now += wait
    return grants


def max_in_any_window(grants: list[float], window: float = 60.0) -> int:
    """The largest number of grants inside any half-open window (t - window, t]."""
    best = 0
    start = 0
    for end, t in enumerate(grants):
        while grants[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def steady(rate_per_second: float, seconds: float) -> list[float]:
    n = int(rate_per_second * seconds)
    return [i / rate_per_second for i in range(n)]


@pytest.mark.parametrize(
    ("rate", "burst", "arrivals"),
    [
        (120, 1, [0.0] * 600),  # everyone at once, no burst
        (120, 10, [0.0] * 600),  # default-ish burst
        (120, 120, [0.0] * 600),  # burst = the whole window: still 120 per window
        (120, 60, [0.0] * 60 + [59.9] * 200),  # full bucket again right before the window ends
        (120, 10, steady(5.0, 300)),  # arrivals faster than allowed
        (120, 10, steady(1.9, 300)),  # arrivals just under the rate: no queueing needed
        (120, 30, [i * 37.0 for i in range(10) for _ in range(50)]),  # bursts every 37 s
        (60, 5, [0.0] * 300),
        (1, 1, [0.0] * 5),
        (7, 3, steady(0.5, 200)),
        (1000, 100, [0.0] * 5000),
    ],
)
def test_never_more_than_rate_in_any_60s_window(rate, burst, arrivals):
    grants = drain(TokenBucket(rate, burst), arrivals)
    assert len(grants) == len(arrivals)
    assert max_in_any_window(grants) <= rate
    assert grants == sorted(grants)


@pytest.mark.parametrize(("rate", "burst"), [(120, 1), (120, 10), (120, 120), (60, 5)])
def test_sustained_throughput_is_the_full_rate(rate, burst):
    # 10 minutes of backlog: the budget gives the whole rate, not rate minus burst.
    n = rate * 10
    grants = drain(TokenBucket(rate, burst), [0.0] * n)
    assert grants[-1] <= 600.0
    assert max_in_any_window(grants) == rate


@pytest.mark.parametrize(
    ("rate", "burst", "times", "expected_waits"),
    [
        # burst 2, refill 2/s: two at once, then one every 0.5 s
        (120, 2, [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]),
        (120, 2, [0.0, 0.0, 0.25], [0.0, 0.0, 0.25]),
        (120, 2, [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]),
        # rate 2/min, burst 2: the third waits for the first to leave the 60 s window
        (2, 2, [0.0, 10.0, 30.0], [0.0, 0.0, 30.0]),
        (2, 2, [0.0, 10.0, 60.0], [0.0, 0.0, 0.0]),
        # rate 3/min, burst 1: refill 0.05/s, one every 20 s
        (3, 1, [0.0, 0.0], [0.0, 20.0]),
    ],
)
def test_take_returns_seconds_to_wait(rate, burst, times, expected_waits):
    bucket = TokenBucket(rate, burst)
    waits = [bucket.take(t) for t in times]
    assert waits == pytest.approx(expected_waits)


def test_a_refused_take_consumes_nothing():
    bucket = TokenBucket(60, 1)
    assert bucket.take(0.0) == 0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(0.9) == pytest.approx(0.1)
    assert bucket.take(1.0) == 0


def test_pause_holds_every_request_and_never_shrinks():
    bucket = TokenBucket(120, 10)
    bucket.pause_until(25.0)
    assert bucket.take(0.0) == pytest.approx(25.0)
    bucket.pause_until(5.0)  # an earlier Retry-After does not shorten the pause
    assert bucket.take(10.0) == pytest.approx(15.0)
    assert bucket.take(25.0) == 0


def test_pause_in_the_middle_of_a_drain_still_respects_the_window():
    grants = drain(TokenBucket(120, 10), [0.0] * 400, pauses=[(20.0, 45.0), (100.0, 130.0)])
    assert not [g for g in grants if 20.0 < g < 45.0 or 100.0 < g < 130.0]
    assert max_in_any_window(grants) <= 120


@pytest.mark.parametrize(
    ("rate", "reserve", "sync_limit"),
    [(120, 0.0, 120), (120, 0.1, 108), (120, 0.25, 90), (10, 0.5, 5), (3, 0.9, 1), (1, 0.5, 1)],
)
def test_reserve_limits_sync_but_not_status(rate, reserve, sync_limit):
    bucket = TokenBucket(rate, rate, reserve=reserve)
    assert bucket.limit("sync") == sync_limit
    assert bucket.limit("status") == rate
    sync_granted = sum(1 for _ in range(rate) if bucket.take(0.0, priority="sync") == 0)
    assert sync_granted == sync_limit
    status_granted = sum(1 for _ in range(rate) if bucket.take(0.0, priority="status") == 0)
    assert sync_granted + status_granted == rate  # status may use the reserve
    assert bucket.take(0.0, priority="status") > 0


def test_sync_blocked_by_reserve_waits_for_the_window_to_slide():
    bucket = TokenBucket(10, 10, reserve=0.5)
    for t in range(5):
        assert bucket.take(float(t), priority="sync") == 0
    assert bucket.take(5.0, priority="sync") == pytest.approx(55.0)  # first grant leaves at 60
    assert bucket.take(5.0, priority="status") == 0


def test_time_running_backwards_is_harmless():
    bucket = TokenBucket(60, 1)
    assert bucket.take(100.0) == 0
    assert bucket.take(50.0) > 0  # treated as 100.0: no token yet
    assert bucket.take(101.0) == 0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((0,), {}), ((120, 0), {}), ((120, 121), {}), ((120,), {"reserve": 1.0}),
     ((120,), {"reserve": -0.1}), ((120,), {"window": 0.0})],
)
def test_invalid_configuration_is_rejected(args, kwargs):
    with pytest.raises(ValueError):  # noqa: PT011
        TokenBucket(*args, **kwargs)


def test_default_burst_is_clipped_to_the_rate():
    assert TokenBucket(120).burst == 10
    assert TokenBucket(3).burst == 3


# -- asyncio wrapper (real time; a short window keeps the tests fast) ---------------------------


async def test_acquire_is_fifo_among_waiters():
    budget = RequestBudget(rate_per_minute=20, burst=1, window=1.0)  # one per 50 ms
    order: list[int] = []

    async def worker(i: int) -> None:
        await budget.acquire()
        order.append(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0)  # make arrival order explicit
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    stats = budget.stats
    assert stats.granted == 8
    assert stats.waited_seconds > 0.2  # seven of them queued behind the first


async def test_acquire_never_exceeds_the_window_in_real_time():
    budget = RequestBudget(rate_per_minute=10, burst=5, window=0.4)
    grants: list[float] = []
    take = budget.bucket.take

    def recording_take(now: float, *, priority: Priority = "sync") -> float:
        # The instant the budget grants (what its window is about); when a woken waiter runs
        # afterwards depends on the machine's load, and sending later is covered by holding
        # the place until the response (test_budget_release.py).
        wait = take(now, priority=priority)
        if wait <= 0:
            grants.append(now)
        return wait

    budget.bucket.take = recording_take  # type: ignore[method-assign]
    await asyncio.gather(*(budget.acquire() for _ in range(25)))
    assert len(grants) == 25
    grants.sort()
    assert max_in_any_window(grants, window=0.4) <= 10
    assert grants[-1] - grants[0] >= 0.8  # 25 requests need at least two full windows


async def test_pause_holds_later_acquires():
    budget = RequestBudget(rate_per_minute=6000, burst=100)
    loop = asyncio.get_running_loop()
    await budget.acquire()
    budget.pause(0.3)
    start = loop.time()
    await asyncio.gather(budget.acquire(), budget.acquire(priority="status"))
    assert loop.time() - start >= 0.29
    assert budget.stats.pauses == 1
    assert budget.stats.paused_seconds == pytest.approx(0.3, abs=0.01)


async def test_pause_extends_waiters_already_queued():
    budget = RequestBudget(rate_per_minute=20, burst=1, window=1.0)
    loop = asyncio.get_running_loop()
    await budget.acquire()
    start = loop.time()
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.01)
    budget.pause(0.3)
    await waiter
    assert loop.time() - start >= 0.3


async def test_status_passes_a_sync_waiter_held_by_the_reserve():
    budget = RequestBudget(rate_per_minute=4, burst=4, reserve=0.5, window=0.5, allowance=0.0)
    await budget.acquire("sync")
    await budget.acquire("sync")  # sync limit (2 per window) reached
    done: list[str] = []

    async def go(priority: Priority) -> None:
        await budget.acquire(priority)
        done.append(priority)

    sync_task = asyncio.create_task(go("sync"))
    await asyncio.sleep(0)
    status_task = asyncio.create_task(go("status"))
    await asyncio.wait_for(status_task, 0.2)  # not stuck behind the sync waiter
    assert done == ["status"]
    await asyncio.wait_for(sync_task, 1.0)  # the sync one goes once the window slides
    assert done == ["status", "sync"]


async def test_cancelled_waiter_leaves_the_queue():
    budget = RequestBudget(rate_per_minute=20, burst=1, window=1.0)
    await budget.acquire()
    first = asyncio.create_task(budget.acquire())
    second = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0.01)
    assert budget.waiting == 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 0.5)
    assert budget.waiting == 0
    assert budget.stats.granted == 2


async def test_a_page_goes_before_checks_queued_earlier():
    budget = RequestBudget(rate_per_minute=20, burst=1, window=1.0)  # one per 50 ms
    await budget.acquire("status")
    order: list[str] = []

    async def go(name: str, priority: Priority) -> None:
        await budget.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(go(f"check{i}", "status")) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(go("page", "sync")))
    await asyncio.gather(*tasks)
    assert order == ["page", "check0", "check1", "check2"]
