"""The plan's settings and what a re-plan reports (notifier.core.planner), kept apart so that
the planner stays one module's size; the planner re-exports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Policy = Literal["adaptive", "round_robin"]
PRIOR_RATE_PER_S = 1.0 / 86400.0  # a token never seen changing changes at most daily


@dataclass(slots=True)
class SchedulerSettings:
    interval: float = 5.0
    max_staleness: float | None = None
    """The longest interval, when the budget covers it; None: ``QUIET_PASSES`` passes
    (notifier.core.planner)."""
    status_chunk: int = 100
    quarantine_initial: float = 30.0
    quarantine_max: float = 1800.0
    policy: Policy = "adaptive"
    requests_per_minute: float = 120.0
    reserve: float = 0.2
    workers: int = 4
    drain_turn_pages: int | None = 50
    """Sync pages a drain may fetch per drain slot before it queues for the slot again."""
    utilisation: float = 1.0
    """Share of the check pace the adaptive plan fills (headroom keeps queues short)."""
    rate_half_life: float | None = None
    """Memory of the change-rate estimates; default three caps (notifier.core.planner)."""
    rate_prior_per_s: float = PRIOR_RATE_PER_S
    """The most a token never seen changing is assumed to change (and at most
    ``PRIOR_PER_CAP`` times per cap: notifier.core.planner)."""
    retune_every: float | None = None
    """Seconds between re-plans; default a twentieth of a pass, within [1, 60]."""
    sync_rate_time_constant: float = 60.0
    """Seconds over which the estimate of sync pages paid per second averages."""


@dataclass(frozen=True, slots=True)
class Replan:
    """What a ``retune`` decided, for the scheduler to report."""

    full_pass: float  # seconds one check of every group takes at the planned pace
    checks_per_s: float  # check requests per second the plan spends
    effective_interval: float | None  # what a full pass takes now (None: from passes instead)
    coverage: Literal["lost", "regained"] | None = None  # change in covering max_staleness
    pulled: bool = False  # some group is due sooner than before: wake the workers
    cap: float = 0.0  # the longest interval planned (max_staleness, or QUIET_PASSES passes)
