"""``TokenBucket.take``'s grant when every rule has room is a few comparisons: it decides
exactly what the rules, each asked in turn, decided before (a reference copy of them below),
over random traffic with pauses, both priorities, answered and abandoned requests, clocks
that stand still or step back, and windows that fill."""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right, insort

import pytest

from notifier.core.budget import TokenBucket

EPSILON, MIN_WAIT = 1e-9, 1e-6


class Rules:
    """The bucket's rules as they were written before the fast path: every wait computed, a
    grant when none is left."""

    def __init__(self, rate: int, burst: int, reserve: float, window: float,
                 allowance: float) -> None:
        self.rate, self.burst, self.window, self.allowance = rate, burst, window, allowance
        self.refill = rate / window
        self.sync_limit = max(1, math.floor(rate * (1.0 - reserve) + EPSILON))
        self.tokens, self.last = float(burst), None
        self.reach: list[float] = []
        self.sync_reach: list[float] = []
        self.open: dict[int, tuple[float, bool]] = {}
        self.granted, self.paused_until = 0, -math.inf

    def take(self, now: float, priority: str) -> float:
        if self.last is not None:
            now = max(now, self.last)
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.refill)
        self.last = now
        for places in (self.reach, self.sync_reach):
            del places[:bisect_right(places, now - self.window)]
        waits = []
        if now < self.paused_until:
            waits.append(self.paused_until - now)
        if self.tokens + EPSILON < 1.0:
            waits.append((1.0 - self.tokens) / self.refill)
        for places, limit in ((self.reach, self.rate), (self.sync_reach, self.sync_limit)):
            if len(places) >= limit:
                waits.append(places[len(places) - limit] + self.window - now)
            if priority == "status":
                break
        if waits:
            return max(*waits, MIN_WAIT)
        self.tokens = max(0.0, self.tokens - 1.0)
        reach = now + self.allowance
        insort(self.reach, reach)
        if priority == "sync":
            insort(self.sync_reach, reach)
        self.granted += 1
        self.open[self.granted] = (reach, priority == "sync")
        if len(self.open) > 4 * self.rate:  # grants never reported: forgotten
            self.open = {k: v for k, v in self.open.items() if v[0] > now - self.window}
        return 0.0

    def done(self, grant: int, at: float, answered: bool) -> None:
        held = self.open.pop(grant, None)
        if held is None:
            return
        old, sync = held
        reach = at + (0.0 if answered else self.allowance)
        for places in (self.reach, self.sync_reach) if sync else (self.reach,):
            i = bisect_left(places, old)
            if i < len(places) and places[i] == old:
                del places[i]
            insort(places, reach)


@pytest.mark.parametrize("seed", range(12))
def test_the_fast_grant_decides_as_every_rule_did(seed: int) -> None:
    rng = random.Random(seed)
    rate = rng.choice((1, 3, 10, 120, 600))
    burst = rng.randint(1, min(rate, 10))
    reserve = rng.choice((0.0, 0.2, 0.5))
    window, allowance = rng.choice(((60.0, 1.0), (5.0, 0.5), (1.0, 0.0)))
    bucket = TokenBucket(rate, burst, reserve=reserve, window=window, allowance=allowance)
    rules = Rules(rate, burst, reserve, window, allowance)
    now, open_grants, granted = 0.0, list[int](), 0
    for _ in range(4000):
        step = rng.random()
        if step < 0.02:  # a clock standing still or a hair behind
            now -= rng.choice((0.0, 1e-7))
        else:
            now += rng.expovariate(rate / window * rng.choice((0.5, 2.0, 20.0)))
        if rng.random() < 0.01:
            until = now + rng.uniform(0, window / 4)
            bucket.pause_until(until)
            rules.paused_until = max(rules.paused_until, until)
        if open_grants and rng.random() < 0.5:
            grant = open_grants.pop(rng.randrange(len(open_grants)))
            answered = rng.random() < 0.8
            bucket.done(grant, now, answered=answered)
            rules.done(grant, now, answered)
        priority = rng.choice(("status", "sync"))
        wait = bucket.take(now, priority=priority)
        assert wait == rules.take(now, priority)
        assert bucket.granted == rules.granted
        if wait == 0:
            granted += 1
            open_grants.append(bucket.granted)
    assert granted > 50  # the windows filled and emptied, both paths were taken
    assert granted < 4000
