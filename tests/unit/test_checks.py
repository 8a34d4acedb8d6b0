"""How each check goes and what it teaches (notifier.core.checks, Planner.plan_check/observe):
the cost choice between syncStatus and direct syncs, learning, forgetting, the staleness cap."""

from __future__ import annotations

import math

import pytest

from notifier.core.checks import CheckChoice, Together, choose_check, choose_probe, status_calls
from notifier.core.planner import (
    MAX_SLOT_PASSES,
    QUIET_PASSES,
    SLOT_ALLOWANCE,
    Planner,
    SchedulerSettings,
)
from notifier.core.rates import TokenRate, change_probability, token_probabilities

# --- the cost choice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "chunk", "direct", "requests", "expected"),
    [
        # one token: a direct sync (1 request) beats status-then-sync (1 + p)...
        ([0.9], 100, (0,), 1, 1.0),
        ([0.2], 100, (0,), 1, 1.0),
        # ... unless the token is so quiet that the saving is not worth a checkpoint write
        ([0.01], 100, (), 1, 1.01),
        # three tokens that change together: three syncs beat one status and ~three syncs
        ([0.9, 0.9, 0.9], 100, (0, 1, 2), 3, 3.0),
        # one busy token among quiet ones: one status call is cheaper than syncing all...
        ([0.9, 0.0, 0.0], 100, (), 1, 1.9),
        # ... and a sure change costs the same either way: synced at once (a tie goes direct)
        ([1.0, 0.0, 0.0], 100, (0,), 2, 2.0),
        # more tokens than one call holds: syncing the likeliest saves a second call
        ([0.3] + [0.0] * 100, 100, (0,), 2, 2.0),
        ([0.0] * 101, 100, (), 2, 2.0),
        ([], 100, (), 0, 0.0),
    ],
)
def test_choose_check_takes_the_cheapest_split(p, chunk, direct, requests, expected):
    choice = choose_check(p, chunk)
    assert choice.direct == direct
    assert sorted(choice.direct + choice.status) == list(range(len(p)))
    assert choice.requests == requests
    assert choice.expected == pytest.approx(expected)


@pytest.mark.parametrize(("tokens", "chunk", "calls"), [(0, 100, 0), (1, 100, 1), (100, 100, 1),
                                                        (101, 100, 2), (5, 0, 5)])
def test_status_calls(tokens, chunk, calls):
    assert status_calls(tokens, chunk) == calls


def test_change_probability():
    assert change_probability(0.0, 100.0) == 0.0
    assert change_probability(1 / 60, 60.0) == pytest.approx(1 - math.exp(-1))
    assert change_probability(1.0, -5.0) == 0.0


@pytest.mark.parametrize(
    ("p", "due", "probe", "followers", "direct", "status", "expected"),
    [
        # three tokens that change together, each half likely to have: one sync, and the two
        # others only if it found changes (1 + 0.5 x 2), not status and three syncs (2.5)
        ([0.5, 0.5, 0.5], [False] * 3, 0, (1, 2), (), (), 2.0),
        # the likeliest goes first; one whose check may not wait goes first on a tie...
        ([0.4, 0.5, 0.4], [False] * 3, 1, (0, 2), (), (), 2.0),
        ([0.5, 0.5, 0.5], [False, False, True], 2, (0, 1), (), (), 2.0),
        # ... and one that may not wait and does not go first is checked in any case
        ([0.7, 0.7, 0.7, 0.6], [False, False, False, True], 0, (1, 2), (3,), (), 3.4),
        # sure changes: three syncs either way, no waiting on the first
        ([1.0, 1.0, 1.0], [False] * 3, None, (), (0, 1, 2), (), 3.0),
        # quiet tokens: one status call, no checkpoint writes for nothing
        ([0.01, 0.01, 0.01], [False] * 3, None, (), (), (0, 1, 2), 1.03),
        # every token may not wait: nothing to gain
        ([0.5, 0.5], [True, True], None, (), (0, 1), (), 2.0),
        ([0.5], [False], None, (), (0,), (), 1.0),
    ],
)
def test_choose_probe_syncs_one_token_first_when_that_is_cheaper(p, due, probe, followers,
                                                                  direct, status, expected):
    choice = choose_probe(p, due, 100)
    assert (choice.probe, choice.followers, choice.direct, choice.status) == (
        probe, followers, direct, status)
    assert choice.expected == pytest.approx(expected)
    assert choice.requests == (probe is not None) + len(direct) + status_calls(len(status), 100)


def test_tokens_are_taken_to_change_together_after_checks_that_found_them_all_changed():
    t = Together()
    for changed in ([True, True], [False, False], [True, True]):  # no change: no evidence
        t.observe(changed)
    assert not t.likely
    t.observe([True, True])
    t.observe([True])  # one token alone says nothing
    assert t.likely
    t.observe([True, False])  # one went alone: not any more
    assert not t.likely


# --- learning and forgetting ------------------------------------------------------------------

H, PRIOR, PSEUDO = 600.0, 1e-5, 60.0


def _est(r: TokenRate, now: float) -> float:
    return r.estimate(now, half_life=H, prior=PRIOR, pseudo=PSEUDO)


def test_one_check_that_finds_a_change_makes_a_token_busy():
    r = TokenRate()
    assert _est(r, 0.0) == pytest.approx(PRIOR)
    r.observe(300.0, 300.0, True, half_life=H, prior=PRIOR, pseudo=PSEUDO)
    assert _est(r, 300.0) == pytest.approx(PRIOR + 1 / (300 + PSEUDO), rel=1e-2)  # 1 per 300 s


def test_a_token_changing_at_every_check_is_not_underestimated():
    # 1 change a second, checked every 3 s: every check finds "changed" (the count of changes
    # in between is unknown); counting one per check would say a third of the truth.
    r, naive = TokenRate(), TokenRate()
    for k in range(1, 200):
        r.observe(3.0 * k, 3.0, True, half_life=H, prior=PRIOR, pseudo=PSEUDO)
        naive.observe(3.0 * k, 3.0, False, half_life=H, prior=PRIOR, pseudo=PSEUDO)
        naive.changes += 1.0
    assert _est(naive, 600.0) < 0.34
    assert _est(r, 600.0) > 0.45


def test_a_token_changing_faster_than_its_checks_is_credited_with_the_changes_they_return():
    # 2 changes a second, checked every 3 s: "changed" alone fits any rate above one per
    # check, and the estimate crawls up from the first one; the changes returned (6 per check)
    # say how many there were.
    counted, flagged = TokenRate(), TokenRate()
    for k in range(1, 31):
        counted.observe(3.0 * k, 3.0, 6, half_life=H, prior=PRIOR, pseudo=PSEUDO)
        flagged.observe(3.0 * k, 3.0, True, half_life=H, prior=PRIOR, pseudo=PSEUDO)
    assert 1.0 < _est(counted, 90.0) < 2.0
    assert _est(flagged, 90.0) < 0.5
    many = TokenRate()  # a check never counts for more than MAX_CHANGES_PER_CHECK
    many.observe(300.0, 300.0, 1000, half_life=H, prior=PRIOR, pseudo=PSEUDO)
    assert _est(many, 300.0) == pytest.approx(PRIOR + 20 / (300 + PSEUDO), rel=1e-2)


def test_a_token_that_turns_quiet_is_forgotten_within_a_few_half_lives():
    r = TokenRate()
    for k in range(1, 61):  # busy for 10 minutes: about one change per check of 10 s
        r.observe(10.0 * k, 10.0, True, half_life=H, prior=PRIOR, pseudo=PSEUDO)
    busy = _est(r, 600.0)
    t = 600.0
    while t < 600.0 + 4 * H:  # then quiet, checked every minute
        t += 60.0
        r.observe(t, 60.0, False, half_life=H, prior=PRIOR, pseudo=PSEUDO)
    assert _est(r, t) < busy / 20


# --- the planner: how to check, what a check teaches, the staleness cap ----------------------

CIDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(100)]
NOW = 1_000_000.0


def _planner(n: int = 100, **kw: object) -> Planner:
    settings = SchedulerSettings(interval=5.0, requests_per_minute=120, reserve=0.2,
                                 **kw)  # type: ignore[arg-type]
    plan = Planner(settings, dict.fromkeys(CIDS[:n], 1))
    for cid in CIDS[:n]:
        plan.start(cid, NOW - 10, NOW)
    plan.retune(NOW)
    return plan


def test_a_quiet_container_is_asked_by_status_a_busy_one_is_synced_directly():
    plan = _planner(5)  # 5 containers every 5 s: a check a second, the budget has room
    quiet = plan.plan_check(CIDS[1], [("sub", NOW - 100)], NOW)
    assert (quiet.direct, quiet.status) == ((), (0,))
    plan.observe(CIDS[0], "sub", now=NOW, since=NOW - 100, changed=True)
    busy = plan.plan_check(CIDS[0], [("sub", NOW)], NOW + 20)
    assert (busy.direct, busy.status) == ((0,), ())


def test_while_the_budget_binds_a_single_token_is_synced_directly_however_quiet():
    # 100 containers every 5 s would take 20 requests a second: the budget binds. A direct
    # sync costs the one request the syncStatus call would and saves the page after it.
    plan = _planner()
    quiet = plan.plan_check(CIDS[1], [("sub", NOW - 100)], NOW)
    assert (quiet.direct, quiet.status, quiet.requests) == ((0,), (), 1)
    assert quiet.expected < 1 + change_probability(plan.groups[CIDS[1]].rate, 100)
    # Several tokens on a container: one syncStatus call still beats a sync each.
    three = Planner(SchedulerSettings(interval=5.0), dict.fromkeys(CIDS, 3))
    for cid in CIDS:
        three.start(cid, NOW - 10, NOW)
    three.retune(NOW)
    choice = three.plan_check(CIDS[1], [(k, NOW - 100) for k in "abc"], NOW)
    assert (choice.direct, choice.status, choice.requests) == ((), (0, 1, 2), 1)
    # Round-robin asks status whatever the budget (test_round_robin_always_asks_status_first).


def test_round_robin_always_asks_status_first():
    plan = _planner(policy="round_robin")
    plan.observe(CIDS[0], "sub", now=NOW, since=NOW - 100, changed=True)
    choice = plan.plan_check(CIDS[0], [("sub", NOW)], NOW + 20)
    assert (choice.direct, choice.status, choice.requests) == ((), (0,), 1)


def test_a_container_is_treated_as_busy_from_the_check_that_found_its_first_change():
    plan = _planner()
    cid = CIDS[0]
    before = plan.groups[cid].interval
    assert not plan.is_busy(cid, NOW)
    while plan.pop_due(NOW) is not None:  # every check under way
        pass
    plan.observe(cid, "sub", now=NOW, since=NOW - before, changed=True)
    plan.reschedule(cid, started=NOW, now=NOW)
    after = plan.groups[cid].interval
    assert after == pytest.approx(5.0)  # the busiest get poll.interval
    assert plan.due_of(cid) == pytest.approx(NOW + after)
    assert after < before / 5
    assert plan.is_busy(cid, NOW)


def test_a_busy_container_that_turns_quiet_goes_back_to_the_quiet_interval():
    plan = _planner()
    cid, t = CIDS[0], NOW
    for _ in range(20):  # busy: every check finds a change
        plan.observe(cid, "sub", now=t + 5, since=t, changed=True)
        t += 5
    plan.retune(t)
    assert plan.groups[cid].interval == pytest.approx(5.0)
    while plan.groups[cid].interval < 0.9 * plan.groups[CIDS[50]].interval:
        plan.retune(t)
        plan.observe(cid, "sub", now=t + plan.groups[cid].interval, since=t, changed=False)
        t += plan.groups[cid].interval
        assert t < NOW + 20 * 3600, "never forgotten"
    assert not plan.is_busy(cid, t + 3600)


@pytest.mark.parametrize(
    ("containers", "max_staleness", "cap"),
    [
        (100, None, "passes"),  # unset: about two round-robin passes
        (100, 80.0, 80.0),  # set and covered by the budget: a hard bound
        (100, 3600.0, "passes"),  # a looser bound than two passes: two passes
        (1000, 300.0, "passes"),  # set but out of reach: two passes, logged as lost
    ],
)
def test_the_staleness_cap(containers, max_staleness, cap):
    plan = Planner(SchedulerSettings(interval=5.0, max_staleness=max_staleness),
                   {f"c{i}": 1 for i in range(containers)})
    replan = plan.retune(NOW)
    assert replan is not None
    one_pass = containers / plan.status_pace_per_s
    if cap == "passes":
        slots = min(SLOT_ALLOWANCE * plan.settings.workers / plan.status_pace_per_s,
                    MAX_SLOT_PASSES * one_pass)
        assert QUIET_PASSES * one_pass - slots <= replan.cap
        assert replan.cap <= QUIET_PASSES * one_pass * 1.01 - slots
    else:
        assert replan.cap == cap
    assert replan.coverage == ("lost" if max_staleness == 300.0 else None)
    for k in range(10):  # busy ones never push the quiet ones past the cap
        plan.observe(f"c{k}", "sub", now=NOW, since=NOW - 60, changed=True)
    replan = plan.retune(NOW + 1)  # type: ignore[assignment]
    assert max(g.interval for g in plan.groups.values()) <= replan.cap + 1e-6
    used = sum(g.requests / g.interval for g in plan.groups.values())
    assert used <= plan.status_checks_per_s() * (1 + 1e-6) or (
        max_staleness == 300.0 and all(g.interval == pytest.approx(replan.cap)
                                       for g in list(plan.groups.values())[10:]))


def test_quiet_containers_share_what_the_busy_ones_leave():
    plan = _planner()
    quiet_before = plan.groups[CIDS[50]].interval
    for k in range(2):
        plan.observe(CIDS[k], "sub", now=NOW, since=NOW - 60, changed=True)
    plan.retune(NOW + 1)
    busy = [plan.groups[c].interval for c in CIDS[:2]]
    quiet = [plan.groups[c].interval for c in CIDS[2:]]
    assert max(busy) < min(quiet) / 5
    assert len(set(quiet)) == 1  # alike...
    assert quiet[0] > quiet_before  # ... a little less often than when nobody was busy...
    assert quiet[0] < plan.retune(NOW + 2).cap  # type: ignore[union-attr]  # ... not at the cap


@pytest.mark.parametrize("containers", [1000, 10_000])
def test_containers_never_seen_changing_leave_the_busy_ones_their_share_at_any_size(
        containers):
    """A container that changed once in its last two passes is checked many times more often
    than those never seen changing, at any size: the prior follows the cap (a daily prior was
    only ~8 times less than that with 10,000 containers, where a pass takes 1.5 hours, and the
    never-changing ones took most of the budget)."""
    plan = Planner(SchedulerSettings(), {f"c{i}": 1 for i in range(containers)})
    plan.retune(NOW)
    one_pass = containers / plan.status_pace_per_s
    busy = [f"c{k}" for k in range(containers // 100)]
    for cid in busy:
        plan.observe(cid, "sub", now=NOW, since=NOW - 2 * one_pass, changed=True)
    plan.retune(NOW + 1)
    quiet = plan.groups[f"c{containers - 1}"].interval
    most = max(plan.groups[cid].interval for cid in busy)
    assert most < quiet / 10
    assert most < 0.1 * one_pass
    assert quiet < plan.retune(NOW + 2).cap  # type: ignore[union-attr]  # they share the rest


def _together(changed: list[bool]) -> tuple[Planner, float]:
    """A plan where CIDS[0] has three tokens, seen by three checks to change so."""
    plan = Planner(SchedulerSettings(interval=5.0), {**dict.fromkeys(CIDS[1:], 1), CIDS[0]: 3})
    for cid in CIDS:
        plan.start(cid, NOW - 10, NOW)
    plan.retune(NOW)
    t = NOW
    for _ in range(3):
        t += 30
        plan.learn(CIDS[0], [(k, t - 30, c) for k, c in zip("abc", changed, strict=True)], t)
    return plan, t


def test_tokens_that_change_together_are_probed_by_one_sync_first():
    plan, t = _together([True, True, True])
    choice = plan.plan_check(CIDS[0], [(k, t - 10) for k in "abc"], t)
    assert choice.probe is not None
    assert len(choice.followers) == 2
    assert (choice.direct, choice.status, choice.requests) == ((), (), 1)
    # a token whose next check would come after the cap does not wait on the probe
    cap = plan.retune(t).cap  # type: ignore[union-attr]
    stale = plan.plan_check(CIDS[0], [("a", t - 10), ("b", t - 10), ("c", t - cap)], t)
    assert 2 not in stale.followers
    assert stale.probe == 2 or 2 in stale.direct + stale.status
    # only when every token is asked about (not while some are quarantined or resyncing)
    assert plan.plan_check(CIDS[0], [(k, t - 10) for k in "ab"], t).probe is None
    # nor in a one-off pass (--once), which checks every stream
    assert plan.plan_check(CIDS[0], [(k, t - 10) for k in "abc"], t, probe=False).probe is None


def test_tokens_that_change_apart_are_not_probed():
    plan, t = _together([True, False, True])
    assert plan.plan_check(CIDS[0], [(k, t - 10) for k in "abc"], t).probe is None


def _reference_probabilities(tokens, rates, now, *, interval, cap, half_life, prior, pseudo):
    """token_probabilities computed token by token, as the planner did before."""
    p, due = [], []
    for key, since in tokens:
        est = rates.get(key)
        rate = prior if est is None else est.estimate(now, half_life=half_life, prior=prior,
                                                      pseudo=pseudo)
        p.append(change_probability(rate, now - since if since is not None else interval))
        due.append(since is None or now - since + interval >= cap * (1 - 1e-9))
    return p, due


def test_token_probabilities_per_last_check_equal_the_per_token_computation() -> None:
    busy = TokenRate()
    busy.observe(900.0, 300.0, 1, half_life=3600.0, prior=1e-5, pseudo=600.0)
    rates = {"busy": busy}
    # Tokens at the prior sharing last checks, one never checked, one past the cap, and a
    # learnt token sharing a last check with prior ones (it must not take theirs).
    tokens = [("a", 400.0), ("b", 400.0), ("busy", 400.0), ("c", None), ("d", 10.0),
              ("e", 400.0), ("f", 990.0), ("g", None)]
    args = {"interval": 60.0, "cap": 1000.0, "half_life": 3600.0, "prior": 1e-5,
            "pseudo": 600.0}
    got = token_probabilities(tokens, rates, 1000.0, **args)
    assert got == _reference_probabilities(tokens, rates, 1000.0, **args)
    p, due = got
    assert p[0] == p[1] == p[5]
    assert p[2] > p[0]  # the learnt rate, not the prior
    assert due == [False, False, False, True, True, False, False, True]


def test_choose_check_for_a_quiet_container_asks_status_of_every_token() -> None:
    p = [0.001, 0.04, 0.0, 0.049]
    choice = choose_check(p, 2)
    assert choice == CheckChoice((), (0, 1, 2, 3), 2, 2 + math.fsum(p))
    assert choose_check([], 2) == CheckChoice((), (), 0, 0.0)
    # One token likely enough changes the answer (the general path).
    assert choose_check([0.9], 2).direct == (0,)


@pytest.mark.parametrize("tokens", [
    [("a", 400.0), ("b", 400.0), ("c", 400.0)],  # checked together (the usual): one computation
    [("a", None), ("b", None)],  # never checked
    [("a", 400.0), ("b", 10.0), ("c", None), ("d", 400.0)],  # apart: per last check
    [("a", 990.0)],
])
def test_token_probabilities_without_learnt_rates_equal_the_per_token_computation(tokens):
    args = {"interval": 60.0, "cap": 1000.0, "half_life": 3600.0, "prior": 1e-5,
            "pseudo": 600.0}
    got = token_probabilities(tokens, {}, 1000.0, **args)
    assert got == _reference_probabilities(tokens, {}, 1000.0, **args)
    assert token_probabilities([], {}, 1000.0, **args) == ([], [])


def test_a_check_that_found_nothing_teaches_only_a_group_with_learnt_rates() -> None:
    plan = Planner(SchedulerSettings(), {"c": 2})
    assert not plan.learns_from_quiet("c")  # at the prior: a quiet check changes nothing
    before = (plan.groups["c"].rate, plan.groups["c"].interval)
    plan.learn("c", [("a", 900.0, 0), ("b", 900.0, 0)], 1000.0)
    assert (plan.groups["c"].rate, plan.groups["c"].interval) == before
    assert not plan.groups["c"].tokens
    plan.learn("c", [("a", 1000.0, 1), ("b", 1000.0, 0)], 1100.0)  # a change: a rate to lower
    assert plan.learns_from_quiet("c")
    assert not plan.learns_from_quiet("gone")
    assert not Planner(SchedulerSettings(policy="round_robin"), {"c": 2}).learns_from_quiet("c")
