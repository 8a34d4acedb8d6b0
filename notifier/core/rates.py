"""Each token's change rate, learnt from its checks (pure), and what it makes likely: the
probability that a token changed since its last check, which the check choice
(notifier.core.checks) weighs.

The change rate of a token is a gamma-Poisson estimate with forgetting: changes found and the
seconds the checks covered both decay with ``half_life``, so a token that turns busy is seen
as busy from the first check that finds a change (rate ≈ 1 / what that check covered; after a
long quiet history, from the second: below), and one
that turns quiet fades within a few half-lives. A check that found a change counts the
changes it most likely covered (``λτ / (1 - e^{-λτ})``, at least one): a busy token checked
about once per change is not mistaken for a slower one. When the check returned more changes
(events) than that, it counts them (at most ``MAX_CHANGES_PER_CHECK``): "some" fits any rate
above one per check, so a token changing much faster than it is checked stayed near the rate
it was first credited with. A bulk edit counts as its events: each of them waited for the
check, which is the delay the plan spends its checks against.

One change in a long quiet history is not a busy token. Tokens never seen changing keep no
estimate (most never change: they are planned at the prior), but their container's checks
covered every second since it was first checked (``watched``). So the first change found
starts the estimate with that quiet history (``quiet``, decayed like the rest): a token quiet
for three caps that changes once is credited about one change in three caps, not one in the
cap its last check covered. The quiet history is a change-point guess, not a certainty: the
next check that finds a change drops it (two changes in a row are the token turning busy, and
the estimate is then what the checks since the first change found), so a token that turns
busy is treated as busy from the second of its checks that find a change.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_CHANGES_PER_CHECK = 20.0  # what one check that found changes may count for


def change_probability(rate_per_s: float, elapsed: float) -> float:
    """Probability of at least one change in ``elapsed`` seconds at ``rate_per_s`` (Poisson)."""
    return -math.expm1(-max(0.0, rate_per_s) * max(0.0, elapsed))


def quiet_exposure(watched: float | None, since: float | None, now: float,
                   half_life: float) -> float:
    """The seconds of quiet checks covered from ``watched`` (first check) to ``since`` (the
    last check before ``now``), each decayed by its age at ``now`` with ``half_life``:
    ∫ 0.5^((now - t) / h) dt over [watched, since]. 0 when either is unknown."""
    if watched is None or since is None or since <= watched or half_life <= 0:
        return 0.0
    if math.isinf(half_life):
        return since - watched
    h = half_life / math.log(2.0)
    return h * (math.exp(-(now - since) / h) - math.exp(-(now - watched) / h))


@dataclass(slots=True)
class TokenRate:
    """One token's change rate, learnt from its checks (see the module docstring)."""

    changes: float = 0.0  # decayed count of changes found
    covered: float = 0.0  # decayed seconds the checks covered
    updated_at: float | None = None
    quiet: float = 0.0  # decayed quiet seconds before the first change (until a second one)

    def _decay(self, now: float, half_life: float) -> None:
        if self.updated_at is not None and now > self.updated_at and half_life > 0:
            keep = 0.5 ** ((now - self.updated_at) / half_life)
            self.changes *= keep
            self.covered *= keep
            self.quiet *= keep
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now

    def estimate(self, now: float, *, half_life: float, prior: float, pseudo: float) -> float:
        """Changes per second: the prior plus what the checks found over what they covered
        (``pseudo`` seconds of quiet are assumed besides, so one lucky check is not a
        certainty)."""
        self._decay(now, half_life)
        return prior + self.changes / (self.covered + self.quiet + max(pseudo, 1e-9))

    def observe(self, now: float, covered: float, changed: int, *, half_life: float,
                prior: float, pseudo: float) -> None:
        """A check at ``now`` covering the last ``covered`` seconds found ``changed`` changes
        (0: none; 1 also when it only knows there were some; True counts as 1)."""
        covered = max(0.0, covered)
        found = 0.0
        if changed:
            if self.changes > 0:  # a second change: the quiet before the first one is past
                self.quiet = 0.0
            lam_t = self.estimate(now, half_life=half_life, prior=prior,
                                  pseudo=pseudo) * covered
            found = 1.0 if lam_t < 1e-6 else max(1.0, lam_t / -math.expm1(-lam_t))
            found = min(MAX_CHANGES_PER_CHECK, max(found, float(changed)))
        self._decay(now, half_life)
        self.changes += found
        self.covered += covered


def learn_tokens(rates: dict[Hashable, TokenRate],
                 outcomes: Iterable[tuple[Hashable, float | None, int]], now: float, *,
                 watched: float | None, half_life: float, prior: float, pseudo: float) -> bool:
    """Feed one check's outcomes (key, previous check or None, changes found) into ``rates``
    (the container's tokens seen changing, keyed; a token's first change adds it, with the
    quiet its container's checks covered since ``watched``). Whether anything was learnt."""
    learnt = False
    for key, since, changed in outcomes:
        est = rates.get(key)
        if est is None:
            if not changed:
                continue  # a token never seen changing is at the prior: nothing to learn
            est = rates[key] = TokenRate(
                quiet=quiet_exposure(watched, since, now, half_life), updated_at=now)
        covered = 0.0 if since is None else now - since
        if covered > 0 or changed:
            est.observe(now, covered, changed, half_life=half_life, prior=prior,
                        pseudo=pseudo)
            learnt = True
    return learnt


def group_rate(rates: Mapping[Hashable, TokenRate], streams: int, now: float, *,
               half_life: float, prior: float, pseudo: float) -> float:
    """Changes per second of a container's ``streams`` tokens: those in ``rates`` as learnt,
    the others at the ``prior``."""
    learnt = sum(t.estimate(now, half_life=half_life, prior=prior, pseudo=pseudo)
                 for t in rates.values())
    return learnt + prior * max(0, streams - len(rates))


def token_probabilities(
    tokens: Sequence[tuple[Hashable, float | None]], rates: Mapping[Hashable, TokenRate],
    now: float, *, interval: float, cap: float, half_life: float, prior: float, pseudo: float,
) -> tuple[list[float], list[bool]]:
    """For each token (key, last checked: None for never) of a container checked every
    ``interval``: the probability that it changed since its last check, and whether it is
    due (its check may not wait for the next one: the staleness ``cap``). ``rates`` has the
    tokens seen changing; the others are at the ``prior``."""
    p: list[float] = []
    due: list[bool] = []
    learnt, limit = rates.get, cap * (1 - 1e-9)

    def p_due(rate: float, since: float | None) -> tuple[float, bool]:
        if since is None:
            return change_probability(rate, interval), True
        return change_probability(rate, now - since), now - since + interval >= limit

    if not rates and tokens:  # none seen changing (the usual): all at the prior
        since = tokens[0][1]
        sinces = [t for _, t in tokens]
        if sinces.count(since) == len(sinces):  # and checked together: one computation
            p0, due0 = p_due(prior, since)
            return [p0] * len(sinces), [due0] * len(sinces)
    # Tokens at the prior checked together share their last check (10 or 100 on one
    # container): computed once per last check, not per token.
    at_prior: dict[float | None, tuple[float, bool]] = {}
    for key, since in tokens:
        est = learnt(key)
        if est is None:
            known = at_prior.get(since)
            if known is None:
                known = at_prior[since] = p_due(prior, since)
        else:
            known = p_due(est.estimate(now, half_life=half_life, prior=prior, pseudo=pseudo),
                          since)
        p.append(known[0])
        due.append(known[1])
    return p, due
