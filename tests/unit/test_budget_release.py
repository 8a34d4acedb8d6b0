"""A grant's place in the window is held until a window after its response (``done``): the
service, which counts a request when it arrives (after our grant, before its response reaches
us), never sees more than the rate in any window, whatever the latencies; and the budget grants
more than the old window of 61 s from the grant when responses are quick."""

from __future__ import annotations

import asyncio
import heapq
import random

import pytest

from notifier.core.budget import RequestBudget, TokenBucket


def max_in_any_window(times: list[float], window: float = 60.0) -> int:
    """The most of ``times`` inside any half-open window (t - window, t]."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def serve(bucket: TokenBucket, requests: int, workers: int, latency: random.Random,
          *, answered: float = 1.0, report: bool = True, longest: float = 5.0,
          ) -> list[tuple[float, float, bool]]:
    """``workers`` callers each asking again as soon as their last request ended: (grant,
    end, answered) per request. A request takes 0 to ``longest`` seconds (``latency``); a
    share ``1 - answered`` of them are given up on (no response)."""
    out: list[tuple[float, float, bool]] = []
    ready = [(0.0, w) for w in range(workers)]  # (when the worker asks, worker)
    heapq.heapify(ready)
    while len(out) < requests:
        now, w = heapq.heappop(ready)
        wait = bucket.take(now, priority="status")
        if wait > 0:
            heapq.heappush(ready, (now + wait, w))
            continue
        grant = bucket.granted
        end = now + latency.uniform(0.0, longest) * latency.choice((0.01, 0.1, 1.0))
        ok = latency.random() < answered
        if report:
            bucket.done(grant, end, answered=ok)  # reported early: the bucket's clock is now
        out.append((now, end, ok))
        heapq.heappush(ready, (end, w))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("arrive", ["grant", "end", "mixed"])
def test_the_service_never_counts_more_than_the_rate_in_any_window(seed, arrive):
    rng = random.Random(seed)
    bucket = TokenBucket(120, burst=10, window=60.0, allowance=1.0)
    served = serve(bucket, 1500, workers=16, latency=rng)
    # The service counts a request anywhere between our grant and its response (or, given
    # up on, up to the allowance after we gave up): the worst case either end, or any mix.
    arrivals = []
    for grant, end, ok in served:
        last = end if ok else end + 1.0
        at = {"grant": grant, "end": last, "mixed": rng.choice((grant, last))}[arrive]
        arrivals.append(at)
    assert max_in_any_window(arrivals) <= 120
    assert max_in_any_window([g for g, _, _ in served]) <= 120


def test_unanswered_requests_keep_the_allowance():
    rng = random.Random(3)
    bucket = TokenBucket(120, burst=10, window=60.0, allowance=1.0)
    served = serve(bucket, 1200, workers=16, latency=rng, answered=0.5)
    assert max_in_any_window([end + 1.0 if not ok else end for _, end, ok in served]) <= 120


def test_a_window_from_the_grant_alone_would_not_hold():
    """The test above fails without ``done``: places freed a window after the grant let a
    slow request counted at its response share a window with 120 later quick ones."""
    rng = random.Random(1)
    bucket = TokenBucket(120, burst=10, window=60.0, allowance=0.0)
    served = serve(bucket, 1500, workers=16, latency=rng, report=False)
    assert max_in_any_window([end for _, end, _ in served]) > 120


def test_quick_responses_free_their_places_sooner_than_a_61_s_window():
    rng = random.Random(2)
    bucket = TokenBucket(120, burst=10, window=60.0, allowance=1.0)
    served = serve(bucket, 2400, workers=8, latency=rng, longest=0.3)
    grants = [g for g, _, _ in served]
    # Sustained, the budget grants 120 per (60 s + a response), not 120 per 61 s.
    rate = sum(1 for g in grants if 120.0 <= g < 1080.0) / 960.0
    assert 120 / 61.0 < rate <= 2.0


def test_a_grant_never_reported_holds_its_place_window_and_allowance():
    bucket = TokenBucket(2, burst=2, window=60.0, allowance=1.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(60.5) == pytest.approx(0.5)  # frees at 61 s: no response known
    bucket.done(1, 30.0)  # answered at 30 s: frees at 90 s, later than 61 s
    assert bucket.take(61.0) == 0.0  # the second grant's place freed
    assert bucket.take(61.0) == pytest.approx(29.0)


def test_a_request_given_up_on_holds_its_place_the_allowance_after_the_give_up():
    bucket = TokenBucket(1, burst=1, window=60.0, allowance=1.0)
    assert bucket.take(0.0) == 0.0
    bucket.done(1, 2.0, answered=False)  # no response by 2 s: it may still arrive up to 3 s
    bucket.done(1, 0.5)  # reported twice: the first report stands
    assert bucket.take(62.0) == pytest.approx(1.0)
    assert bucket.take(63.0) == 0.0


async def test_release_frees_a_place_a_window_after_the_response():
    budget = RequestBudget(rate_per_minute=4, burst=4, window=1.0, allowance=2.0)
    loop = asyncio.get_running_loop()
    grants = [await budget.acquire("status") for _ in range(4)]
    for grant in grants:
        budget.release(grant, answered=True)
    start = loop.time()
    await budget.acquire("status")  # a window after the responses, not window + allowance
    assert 0.9 <= loop.time() - start < 2.5
