"""Simulator configuration (fixed at start) and knobs (changeable while it runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PAGE_SIZE = 100
DEFAULT_ACCESS_TOKEN = "sim-access-token"
DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret"
DEFAULT_REFRESH_TOKEN = "sim-refresh-token"
DEFAULT_USER = "sim-user"
STATIC_TOKEN_USER = "static-token-user"
MALFORMED_KINDS = ("truncated_json", "missing_field", "wrong_type", "third_entity", "huge_page")


@dataclass(slots=True)
class Knobs:
    """Behaviour that tests and scripts may change at any time (``state.knobs``)."""

    fail_rate: float = 0.0
    """Fraction (0..1) of relationship requests answered with an injected 500."""
    latency: float = 0.0
    """Seconds added before answering every relationship request."""
    rpm: int = 120
    """Requests per user in any sliding 60 s window, all relationship endpoints; 0 = unlimited."""
    page_size: int = MAX_PAGE_SIZE
    """Items per sync page and default/maximum search pageLimit (1..100)."""
    access_token_lifetime: float = 3599.0
    """Seconds an access token issued by the token endpoint stays valid."""
    refresh_token_lifetime: float = 15 * 86400.0
    """Seconds a refresh token stays valid."""
    rotation_grace: bool = False
    """False (like the real service): a refresh token is spent the moment it is used, a second
    use gets ``400 invalid_grant``. True: a retry with it is honoured until its successor is
    first used (a grace the real service does not promise)."""
    change_rate: float = 0.0
    """Background changes per second across all containers (about 70% creates, 30% deletes)."""
    retention: float = 0.0
    """Seconds of change history kept: the horizon follows time so that a token is valid for
    at least this long and at most twice this long. 0 = the horizon only moves on request."""
    bind_tokens_to_user: bool = True
    """True: a sync token presented by another user than the one it was issued to is rejected."""
    malformed: str | None = None
    """Spoil successful sync answers: one of ``MALFORMED_KINDS`` (see ``malformed``); None = off."""
    malformed_rate: float = 1.0
    """Fraction (0..1) of the eligible sync answers that ``malformed`` spoils."""
    malformed_count: int | None = None
    """At most this many more spoiled answers (counts down to 0); None = no limit."""
    malformed_container: str | None = None
    """Spoil only this container's sync answers; None = every container."""
    snapshot_deletions: bool = False
    """True: snapshot (bootstrap and overwrite) pages also list, in ``deleted``, relationships
    of the page's creation range deleted since the snapshot's watermark (the API does not say
    that a snapshot page never carries deletions)."""
    reject_sync_tokens: int = 0
    """The next this many ``sync`` requests that carry a token get ``400 BadInput`` for it (as
    for a token the service no longer accepts); counts down to 0."""
    status_batch_400: bool = False
    """True: a syncStatus batch with any unusable token is answered ``400 BadInput`` as a
    whole, instead of one ``errors[]`` entry per bad token."""

    def validate(self) -> None:
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if self.rpm < 0:
            raise ValueError("rpm must be >= 0")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if self.access_token_lifetime <= 0 or self.refresh_token_lifetime <= 0:
            raise ValueError("token lifetimes must be > 0")
        if self.change_rate < 0:
            raise ValueError("change_rate must be >= 0")
        if self.retention < 0:
            raise ValueError("retention must be >= 0")
        if self.malformed is not None and self.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {', '.join(MALFORMED_KINDS)} or null")
        if not 0.0 <= self.malformed_rate <= 1.0:
            raise ValueError("malformed_rate must be between 0 and 1")
        if self.malformed_count is not None and self.malformed_count < 0:
            raise ValueError("malformed_count must be >= 0 or null")
        if self.reject_sync_tokens < 0:
            raise ValueError("reject_sync_tokens must be >= 0")


@dataclass(slots=True)
class SimulatorConfig:
    """How a :class:`~notifier.simulator.Simulator` starts.

    ``containers`` empty means: generate ``generated_containers`` random container ids.
    The Python API defaults to no background changes (``knobs.change_rate = 0``) so tests are
    deterministic; the command line defaults to 0.5 changes per second.
    """

    host: str = "127.0.0.1"
    port: int = 0
    containers: list[str] = field(default_factory=list)
    generated_containers: int = 3
    relationships: int = 25
    seed: int | None = None
    access_token: str | None = DEFAULT_ACCESS_TOKEN
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    refresh_token: str = DEFAULT_REFRESH_TOKEN
    user_id: str = DEFAULT_USER
    knobs: Knobs = field(default_factory=Knobs)
