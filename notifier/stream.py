"""What a stream is (``StreamSpec``, from the configuration) and what a drain of it reports
(``DrainResult``, including the stream's state once the drain returned)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field

from notifier.sinks.base import DirectSink, OutboxSink, Sink, split_sinks

SinkSplit = tuple[tuple[DirectSink, ...], tuple[OutboxSink, ...]]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """Everything the drain needs to know about one stream, from the configuration."""

    subscription: str
    container_id: str
    credentials: tuple[str, ...]
    sinks: tuple[Sink, ...]
    domains: tuple[str, ...] | None = None
    query: Mapping[str, str] | None = None
    emit_initial: bool = True
    project_name: str | None = None  # hub subscriptions: the project's name, in event data
    split: InitVar[SinkSplit | None] = None
    """``split_sinks(sinks)`` when the caller has it: specs built from one shared sinks tuple
    (Assembly.specs: 100,000 streams, a few tuples) share its parts too."""
    direct: tuple[DirectSink, ...] = field(init=False, repr=False)
    """``sinks`` the pipeline publishes to before each checkpoint."""
    outbox: tuple[OutboxSink, ...] = field(init=False, repr=False)
    """``sinks`` whose events go to the state store's outbox with each checkpoint."""

    def __post_init__(self, split: SinkSplit | None) -> None:
        direct, outbox = split_sinks(self.sinks) if split is None else split
        object.__setattr__(self, "direct", direct)
        object.__setattr__(self, "outbox", outbox)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subscription, self.container_id)


@dataclass(slots=True)
class DrainResult:
    """What a drain did, and the stream's state in the store once it returned."""

    pages: int = 0
    created: int = 0
    deleted: int = 0
    completed: bool = False  # False when a stop request interrupted the drain
    sync_token: str | None = None  # the stream's committed sync token
    in_resync: bool = False  # a resync is in progress (begun and not finished)
    committed_at: float | None = None  # time of the drain's last checkpoint, if any
    """A checkpoint also stamps the stream checked and lifts its quarantine and failures."""

    def committed(self, now: float, *, token: str | None, in_resync: bool) -> None:
        """Note a checkpoint: ``token`` None keeps the committed one (mid-resync cursor)."""
        if token is not None:
            self.sync_token = token
        self.in_resync = in_resync
        self.committed_at = now
