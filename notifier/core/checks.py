"""How to check one container (pure): learn each token's change rate, and choose per check
between syncStatus and direct syncs by what each costs in requests.

The upstream budget counts requests, not tokens. A syncStatus call answers for up to
``chunk`` tokens; every token it reports changed then costs one sync page more. A direct
``sync`` costs one request and returns the changes at once (an empty one still hands back a
fresh ``nextSyncToken``, stored like any checkpoint). With ``p`` the probability that a token
changed since its last check, checking ``n`` tokens by status costs ``ceil(n / chunk) + Σp``
requests on average, and syncing the ``k`` likeliest directly (status for the rest) costs
``k + ceil((n - k) / chunk) + Σ_rest p``. ``choose_check`` takes the cheapest split; a tie goes
to the direct syncs, which deliver one round trip sooner. A token whose ``p`` is below
``min_direct`` is never synced directly: the saving would be below ``min_direct`` of a request,
not worth a checkpoint write per check of a quiet container.

The tokens of one container often change together (several subscriptions to one project). For
a container seen doing so (``Together``), ``choose_probe`` also weighs syncing one token first
(the *probe*) and the others (*followers*) only when it returned changes: ``1 + p·followers``
requests. A follower is skipped only while its next check can still come within the staleness
cap; the scheduler then leaves it unchecked (its last check unchanged), not inferred.

The change rate of a token is a gamma-Poisson estimate with forgetting: changes found and the
seconds the checks covered both decay with ``half_life``, so a token that turns busy is seen
as busy from the first check that finds a change (rate ≈ 1 / what that check covered), and one
that turns quiet fades within a few half-lives. A check that found a change counts the
changes it most likely covered (``λτ / (1 - e^{-λτ})``, at least one): a busy token checked
about once per change is not mistaken for a slower one. When the check returned more changes
(events) than that, it counts them (at most ``MAX_CHANGES_PER_CHECK``): "some" fits any rate
above one per check, so a token changing much faster than it is checked stayed near the rate
it was first credited with. A bulk edit counts as its events: each of them waited for the
check, which is the delay the plan spends its checks against.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

MIN_DIRECT = 0.05  # direct sync only for a token at least this likely to have changed
MAX_CHANGES_PER_CHECK = 20.0  # what one check that found changes may count for
TOGETHER_MIN = 2.5  # checks of every token that found every one changed, before a probe
TOGETHER_SHARE = 0.9  # ... and the share of such checks among those that found changes
TOGETHER_KEEP = 0.9  # the weight of the past at each such check


def status_calls(tokens: int, chunk: int) -> int:
    """syncStatus calls needed for ``tokens`` tokens (0 for none)."""
    return 0 if tokens <= 0 else math.ceil(tokens / max(1, chunk))


def change_probability(rate_per_s: float, elapsed: float) -> float:
    """Probability of at least one change in ``elapsed`` seconds at ``rate_per_s`` (Poisson)."""
    return -math.expm1(-max(0.0, rate_per_s) * max(0.0, elapsed))


@dataclass(frozen=True, slots=True)
class CheckChoice:
    """How one check goes: indices synced directly and indices asked by syncStatus; with a
    ``probe``, that index is synced first, and ``followers`` only if it returned changes."""

    direct: tuple[int, ...]
    status: tuple[int, ...]
    requests: int  # requests of the check itself (status calls + direct syncs)
    expected: float  # the same plus the sync pages status is expected to call for
    probe: int | None = None
    followers: tuple[int, ...] = ()


def choose_check(p: Sequence[float], chunk: int, *, min_direct: float = MIN_DIRECT
                 ) -> CheckChoice:
    """The cheapest way, in expected requests, to check tokens changed with probabilities
    ``p`` (see the module docstring); status for everyone when ``min_direct`` > 1."""
    n = len(p)
    rest = math.fsum(p)
    if not p or max(p) < min_direct:  # the usual quiet container: status for everyone
        return CheckChoice((), tuple(range(n)), status_calls(n, chunk),
                           status_calls(n, chunk) + rest)
    order = sorted(range(n), key=lambda i: -p[i])
    best_k, best = 0, status_calls(n, chunk) + rest
    for k in range(1, n + 1):
        pi = p[order[k - 1]]
        if pi < min_direct:
            break
        rest -= pi
        cost = k + (status_calls(n - k, chunk) + max(0.0, rest) if k < n else 0.0)
        if cost <= best + 1e-9:
            best_k, best = k, cost
    direct = tuple(sorted(order[:best_k]))
    status = tuple(sorted(order[best_k:]))
    return CheckChoice(direct, status, best_k + status_calls(n - best_k, chunk), best)


def choose_probe(p: Sequence[float], due: Sequence[bool], chunk: int) -> CheckChoice:
    """For tokens that change together: the cheaper of ``choose_check`` and syncing the
    likeliest token first (the *probe*) and the others only when it returned changes. Tokens
    that are ``due`` (their check may not wait for the next one: the staleness cap) are
    checked anyway, the cheapest way (``choose_check``), and never wait on the probe."""
    plain = choose_check(p, chunk)
    n = len(p)
    if n < 2:
        return plain
    probe = max(range(n), key=lambda i: (p[i], due[i]))
    if p[probe] < MIN_DIRECT:
        return plain
    followers = tuple(i for i in range(n) if i != probe and not due[i])
    rest = [i for i in range(n) if i != probe and due[i]]
    sub = choose_check([p[i] for i in rest], chunk)
    cost = 1.0 + p[probe] * len(followers) + sub.expected
    if not followers or cost >= plain.expected - 1e-9:
        return plain
    return CheckChoice(tuple(rest[i] for i in sub.direct), tuple(rest[i] for i in sub.status),
                       1 + sub.requests, cost, probe, followers)


@dataclass(slots=True)
class Together:
    """Whether a container's tokens change together: of its checks of every token that found
    changes, how many (decayed per such check) found every token changed, and how many not."""

    agreed: float = 0.0
    split: float = 0.0

    def observe(self, changed: Sequence[bool]) -> None:
        if len(changed) < 2 or not any(changed):
            return
        self.agreed *= TOGETHER_KEEP
        self.split *= TOGETHER_KEEP
        if all(changed):
            self.agreed += 1.0
        else:
            self.split += 1.0

    @property
    def likely(self) -> bool:
        return self.agreed >= TOGETHER_MIN and self.split <= (1 - TOGETHER_SHARE) * (
            self.agreed + self.split)


@dataclass(slots=True)
class TokenRate:
    """One token's change rate, learnt from its checks (see the module docstring)."""

    changes: float = 0.0  # decayed count of changes found
    covered: float = 0.0  # decayed seconds the checks covered
    updated_at: float | None = None

    def _decay(self, now: float, half_life: float) -> None:
        if self.updated_at is not None and now > self.updated_at and half_life > 0:
            keep = 0.5 ** ((now - self.updated_at) / half_life)
            self.changes *= keep
            self.covered *= keep
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now

    def estimate(self, now: float, *, half_life: float, prior: float, pseudo: float) -> float:
        """Changes per second: the prior plus what the checks found over what they covered
        (``pseudo`` seconds of quiet are assumed besides, so one lucky check is not a
        certainty)."""
        self._decay(now, half_life)
        return prior + self.changes / (self.covered + max(pseudo, 1e-9))

    def observe(self, now: float, covered: float, changed: int, *, half_life: float,
                prior: float, pseudo: float) -> None:
        """A check at ``now`` covering the last ``covered`` seconds found ``changed`` changes
        (0: none; 1 also when it only knows there were some; True counts as 1)."""
        covered = max(0.0, covered)
        found = 0.0
        if changed:
            lam_t = self.estimate(now, half_life=half_life, prior=prior,
                                  pseudo=pseudo) * covered
            found = 1.0 if lam_t < 1e-6 else max(1.0, lam_t / -math.expm1(-lam_t))
            found = min(MAX_CHANGES_PER_CHECK, max(found, float(changed)))
        self._decay(now, half_life)
        self.changes += found
        self.covered += covered


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
