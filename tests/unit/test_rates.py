"""What a token's first change teaches after a long quiet history (notifier.core.rates,
Planner.learn): little about a container that was quiet for caps, and a container that turns
busy is still treated as busy from the second of its checks that find a change."""

from __future__ import annotations

import math

import pytest

from notifier.core.planner import Planner, SchedulerSettings
from notifier.core.rates import TokenRate, learn_tokens, quiet_exposure

H, PRIOR, PSEUDO = 3000.0, 1e-6, 300.0
ARGS = {"half_life": H, "prior": PRIOR, "pseudo": PSEUDO}


def test_quiet_exposure_is_the_decayed_seconds_from_watched_to_the_last_check() -> None:
    steps = 100_000  # the integral of 0.5^((now - t) / H) over [watched, since], numerically
    watched, since, now = 1000.0, 5000.0, 5600.0
    dt = (since - watched) / steps
    numeric = sum(0.5 ** ((now - (watched + (k + 0.5) * dt)) / H) for k in range(steps)) * dt
    assert quiet_exposure(watched, since, now, H) == pytest.approx(numeric, rel=1e-6)
    assert quiet_exposure(watched, since, now, math.inf) == since - watched  # never forgets
    assert quiet_exposure(watched, since, now, 0.0) == 0.0  # no memory: nothing counts
    assert quiet_exposure(None, since, now, H) == 0.0  # watched since when: unknown
    assert quiet_exposure(watched, None, now, H) == 0.0  # a token's first check
    assert quiet_exposure(since, watched, now, H) == 0.0  # last check before watching


def _first_change(watched: float, since: float, now: float) -> TokenRate:
    rates: dict[object, TokenRate] = {}
    assert learn_tokens(rates, [("sub", since, 1)], now, watched=watched, **ARGS)
    return rates["sub"]


def test_one_change_after_a_long_quiet_history_is_not_taken_for_a_busy_token() -> None:
    fresh = _first_change(watched=0.0, since=0.0, now=600.0)  # changed in its first 600 s
    quiet = _first_change(watched=0.0, since=9 * H, now=9 * H + 600.0)  # quiet for 9 H
    busy_estimate = fresh.estimate(600.0, **ARGS)
    assert busy_estimate == pytest.approx(PRIOR + 1 / (600 + PSEUDO), rel=1e-3)
    quiet_estimate = quiet.estimate(9 * H + 600.0, **ARGS)
    # The quiet history counts, decayed: about H / ln 2 seconds of it (4,300 s here).
    assert quiet_estimate == pytest.approx(
        PRIOR + 1 / (600 + PSEUDO + H / math.log(2) * (0.5 ** (600 / H) - 0.5 ** (9 + 600 / H))),
        rel=1e-3)
    assert quiet_estimate < busy_estimate / 5


def test_a_token_quiet_for_long_that_turns_busy_is_busy_from_its_second_change() -> None:
    t0 = 9 * H
    turned = _first_change(watched=0.0, since=t0, now=t0 + 600.0)
    fresh = TokenRate()  # the same first change, with no quiet history before it
    fresh.observe(t0 + 600.0, 600.0, 1, **ARGS)
    assert turned.estimate(t0 + 600.0, **ARGS) < fresh.estimate(t0 + 600.0, **ARGS) / 5
    # The next check finds a change too: the quiet before the first one no longer counts.
    learn_tokens({"sub": turned}, [("sub", t0 + 600.0, 1)], t0 + 900.0, watched=0.0, **ARGS)
    fresh.observe(t0 + 900.0, 300.0, 1, **ARGS)
    assert turned.quiet == 0.0
    assert turned.estimate(t0 + 900.0, **ARGS) == pytest.approx(
        fresh.estimate(t0 + 900.0, **ARGS), rel=1e-6)


CIDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(100)]


def test_the_planner_counts_a_container_s_quiet_checks_since_it_started_watching() -> None:
    plan = Planner(SchedulerSettings(), dict.fromkeys(CIDS, 1))
    for cid in CIDS:
        plan.start(cid, None, 0.0)  # a first start: watched from now
    plan.retune(0.0)
    cap = plan.retune(100.0)
    assert cap is not None
    assert cap.cap > 60.0
    old, new = CIDS[0], CIDS[1]
    assert plan.groups[old].watched == 0.0
    t = 20 * cap.cap  # both checked every cap since 0; the first change found now, in a cap
    plan.learn(old, [("sub", t - cap.cap, 1)], t)
    plan.learn(new, [("sub", None, 0)], t - cap.cap)  # its first check ever: nothing to learn
    added = plan.add_group(CIDS[1] + "-new", 1, t - cap.cap)
    assert added.watched == t - cap.cap
    plan.learn(added.container_id, [("sub", t - cap.cap, 1)], t)
    assert plan.groups[old].rate < plan.groups[added.container_id].rate / 3
    # Restarted from the store: watched from the last check it knows of.
    again = Planner(SchedulerSettings(), {old: 1})
    again.start(old, 1234.0, 5000.0)
    assert again.groups[old].watched == 1234.0
