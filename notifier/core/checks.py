"""How to check one container (pure): choose per check between syncStatus and direct syncs by
what each costs in requests, from each token's change probability (notifier.core.rates).

The upstream budget counts requests, not tokens. A syncStatus call answers for up to
``chunk`` tokens; every token it reports changed then costs one sync page more. A direct
``sync`` costs one request and returns the changes at once (an empty one still hands back a
fresh ``nextSyncToken``, stored like any checkpoint). With ``p`` the probability that a token
changed since its last check, checking ``n`` tokens by status costs ``ceil(n / chunk) + Σp``
requests on average, and syncing the ``k`` likeliest directly (status for the rest) costs
``k + ceil((n - k) / chunk) + Σ_rest p``. ``choose_check`` takes the cheapest split; a tie goes
to the direct syncs, which deliver one round trip sooner. A token whose ``p`` is below
``min_direct`` is never synced directly: the saving would be below ``min_direct`` of a request,
not worth a checkpoint write per check of a quiet container when requests are not scarce. While
the budget binds they are (every request saved is a check more elsewhere), and the planner
passes 0: a container with one token is then always synced directly, which costs the request
its syncStatus call would and saves the page after it when it changed (notifier.core.planner).

The tokens of one container often change together (several subscriptions to one project). For
a container seen doing so (``Together``), ``choose_probe`` also weighs syncing one token first
(the *probe*) and the others (*followers*) only when it returned changes: ``1 + p·followers``
requests. A follower is skipped only while its next check can still come within the staleness
cap; the scheduler then leaves it unchecked (its last check unchanged), not inferred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_DIRECT = 0.05  # direct sync only for a token at least this likely to have changed
TOGETHER_MIN = 2.5  # checks of every token that found every one changed, before a probe
TOGETHER_SHARE = 0.9  # ... and the share of such checks among those that found changes
TOGETHER_KEEP = 0.9  # the weight of the past at each such check


def status_calls(tokens: int, chunk: int) -> int:
    """syncStatus calls needed for ``tokens`` tokens (0 for none)."""
    return 0 if tokens <= 0 else math.ceil(tokens / max(1, chunk))


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
