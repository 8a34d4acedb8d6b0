"""Where each group of a plan waits (pure): the due-queue, the early queue, and bringing
groups forward after a re-plan. Every method takes ``now``; nothing here sleeps.

The due-queue hands out the most overdue group first. The *early* queue mirrors the groups
planned below the cap (those the plan checks more often than it must): when a worker holds a
free check slot and nothing is due, the one of them due next may go early (``pop``), so the
slots the plan's bunching would leave unused go where the plan spends more than the cap.

After a re-plan a group whose interval got shorter is brought forward when that moves it by
more than ``PULL_SLACK`` of its interval (a cap drifting by a fraction of a percent must not
reorder thousands of groups), or at all under a hard ``max_staleness``. Groups never seen
changing are all alike but for their size (a *kind*): they are placed again only when their
kind's interval moved that much since it last was, so a re-plan of 10,000 mostly quiet
groups touches the queue for the few that changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from notifier.core.checks import Together
from notifier.core.rates import TokenRate
from notifier.core.schedule import DueQueue

FIRST_SPREAD = 0.5  # a first check's interval at the cap: from this share of it (``spread``)
PULL_SLACK = 0.02  # a re-plan brings a group forward when its due time moves by more than this
Kind = tuple[int, float]  # (streams, requests of its last check) of a group at the prior


@dataclass(slots=True)
class GroupPlan:
    """One container's place in the plan."""

    container_id: str
    cost: int  # syncStatus calls one check of every token by status takes
    interval: float
    last_checked: float | None = None  # when every stream of the group was last checked
    streams: int = 1
    tokens: dict[Hashable, TokenRate] = field(default_factory=dict)
    requests: float = 0.0  # requests the last planned check took (its weight in the plan)
    rate: float = 0.0  # changes per second of all its tokens, as of the last look
    together: Together = field(default_factory=Together)  # do its tokens change together?
    watched: float | None = None  # checked since (as far as the plan knows): see core.rates

    def __post_init__(self) -> None:
        self.requests = self.requests or float(self.cost)

    @property
    def kind(self) -> Kind:
        return (self.streams, self.requests)


class PlanQueue:
    """The due-queue and the early queue of one credential's groups."""

    def __init__(self) -> None:
        self._due = DueQueue()
        self._early = DueQueue()
        self._kind_iv: dict[Kind, float] = {}  # each kind's interval at the last re-plan
        self._kind_ref: dict[Kind, tuple[float, bool]] = {}  # ... when last placed
        self._first: dict[str, None] = {}  # due at once at the start, not yet rescheduled
        self._first_done = 0

    def schedule(self, cid: str, due: float, *, below_cap: bool) -> None:
        self._due.schedule(cid, due)
        if below_cap:
            self._early.schedule(cid, due)
        else:
            self._early.remove(cid)

    def remove(self, cid: str) -> None:
        self._due.remove(cid)
        self._early.remove(cid)
        self._first.pop(cid, None)

    def at_once(self, cid: str) -> None:
        """``cid`` starts due at once with the others (a start or restart: ``spread``)."""
        self._first[cid] = None

    def spread(self, cid: str, interval: float, *, at_cap: bool) -> float:
        """The interval after a check of ``cid``: ``interval``, but after the first check of
        a group at the cap that started due with the others, shortened by its place in that
        first round (from ``FIRST_SPREAD`` of it for the first to all of it for the last).
        The quiet groups then come due spread over a cap, not in a run one pass long that
        would come round every cap for ever: the busy groups overdue meanwhile go first, and
        the run's last groups were checked late, past the cap."""
        if cid not in self._first:
            return interval
        del self._first[cid]
        self._first_done += 1
        if not at_cap:
            return interval
        rank = self._first_done / (self._first_done + len(self._first))
        return interval * (FIRST_SPREAD + (1 - FIRST_SPREAD) * rank)

    def due_of(self, cid: str) -> float | None:
        return self._due.due_of(cid)

    def pop(self, now: float, ready_at: Callable[[str], float] | None = None) -> str | None:
        """The most overdue group whose time has come; with ``ready_at`` and nothing due, the
        group below the cap due next, if it may go early by now. Off both queues."""
        cid = self._due.pop_due(now)
        if cid is None and ready_at is not None:
            head = self._early.peek()
            if head is not None and ready_at(str(head)) <= now:
                self._due.remove(head)
                cid = head
        if cid is not None:
            self._early.remove(cid)
        return None if cid is None else str(cid)

    def idle_wait(self, now: float, slot_in: float | None,
                  ready_at: Callable[[str], float]) -> float:
        """How long a worker with nothing due may sleep; with ``slot_in`` (seconds to the
        next free check slot), no longer than until the group below the cap due next may go
        early (``ready_at``) and a slot is free."""
        nxt = self._due.next_due()
        wait = 1.0 if nxt is None else min(max(nxt - now, 0.01), 5.0)
        head = self._early.peek() if slot_in is not None else None
        if slot_in is not None and head is not None:
            wait = min(wait, max(slot_in, ready_at(str(head)) - now, 0.01))
        return wait

    def place(self, g: GroupPlan, iv: float, *, cap: float, hard: bool) -> bool:
        """``g`` is planned at ``iv`` now; True when that brings it forward (module doc)."""
        g.interval = iv
        cid = g.container_id
        due = self._due.due_of(cid)
        if due is None:
            return False
        pulled = False
        if g.last_checked is not None:
            new_due = g.last_checked + iv
            if new_due < due - max(PULL_SLACK * iv, 1e-9) or (hard and new_due < due - 1e-9):
                self._due.schedule(cid, new_due)
                due, pulled = new_due, True
        if iv < cap * (1 - 1e-9):
            self._early.schedule(cid, due)
        else:
            self._early.remove(cid)
        return pulled

    def place_kinds(self, plain: Iterable[GroupPlan], by_kind: Mapping[Kind, float], *,
                    cap: float, hard: bool) -> bool:
        """The groups at the prior take their kind's interval (module doc); True when some
        were brought forward."""
        last, self._kind_iv = self._kind_iv, dict(by_kind)
        moved = set()
        for kind, iv in by_kind.items():
            ref = self._kind_ref.get(kind)
            below = iv < cap * (1 - 1e-9)
            if ref is None or below != ref[1] or iv < ref[0] - max(PULL_SLACK * iv, 1e-9) or (
                    hard and iv < ref[0] - 1e-9):
                self._kind_ref[kind] = (iv, below)
                moved.add(kind)
        pulled = False
        for g in plain:
            kind = g.kind
            if kind in moved or g.interval != last.get(kind):
                pulled = self.place(g, by_kind[kind], cap=cap, hard=hard) or pulled
            else:
                g.interval = by_kind[kind]
        return pulled
