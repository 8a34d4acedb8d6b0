"""The notifier's exception tree.

    NotifierError
    ├── ConfigError                 bad configuration (exit status 2)
    ├── UpstreamError               talking to the Relationship Service (endpoint, status)
    │   ├── TransportError          timeout, connection reset, DNS         retriable
    │   ├── ServerError             5xx                                     retriable
    │   ├── RateLimitedError        429 (retry_after seconds)               retriable
    │   ├── ClientError             other 4xx                               not retriable
    │   │   ├── BadRequestError     400 (bad token, bad filter...)
    │   │   ├── UnauthorizedError   401 even after a token refresh
    │   │   ├── ForbiddenError      403
    │   │   └── NotFoundError       404
    │   └── ProtocolError           malformed or unexpected payload        not retriable
    ├── CredentialError             cannot obtain an access token (credential)
    │   ├── CredentialUnavailableError  token endpoint or token store down   retriable
    │   └── InvalidGrantError       refresh token spent/expired: re-seed needed
    ├── SinkError                   a sink did not accept events (sink)     retriable
    │   ├── SinkConfigError         a sink cannot work as configured        not retriable
    │   └── PartitionLostError      cluster mode: the work partition moved away or is being
    │                               restored; its page is redone by the owner  retriable
    └── StateError                  the state store failed (kind: busy, full, io)  pauses work
        └── StateLockedError        another process holds the state file (exit status 2)

Policy is data on the class: whether an error is worth retrying (``retriable``), and what a
stream that fails with it becomes (``quarantine_reason``, ``resync``, ``container_wide``,
``log_level``, ``pauses_work``), read by the scheduler's one ``on_failure``. Errors carry
context (subscription, endpoint, status, sink) but never secrets.

    error              quarantine_reason  resync  container_wide
    BadRequestError    bad_token          yes
    ForbiddenError     forbidden                  yes
    NotFoundError      gone                       yes
    other ClientError  error
    ProtocolError      malformed_page
    StateError         (not the stream's fault: every loop pauses with backoff, StoreGuard)
    anything else      (not quarantined: retried at the next check, logged at log_level)
"""

from __future__ import annotations

import logging
from typing import ClassVar


class NotifierError(Exception):
    """Base of every error the notifier raises on purpose."""

    retriable: ClassVar[bool] = False
    quarantine_reason: ClassVar[str | None] = None
    """A stream failing with this error is quarantined for this reason (None: retried)."""
    resync: ClassVar[bool] = False
    """The stream's sync token is no good: its next drain resyncs."""
    container_wide: ClassVar[bool] = False
    """The whole container is out of reach (every stream on it fails alike)."""
    log_level: ClassVar[int] = logging.ERROR
    """How a failure that is only retried is logged."""
    needs_operator: ClassVar[bool] = False
    """Retrying cannot help until an operator acts (re-seed a refresh token)."""
    pauses_work: ClassVar[bool] = False
    """Shared infrastructure failed (the state store), not the stream: work pauses with a
    growing backoff and is retried; nothing is lost and nothing is quarantined."""


class ConfigError(NotifierError):
    """The configuration is invalid; ``problems`` holds one line per bad field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class UpstreamError(NotifierError):
    """A call to the Relationship Service failed."""

    log_level = logging.WARNING

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status

    def __str__(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        code = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.args[0]}{code}"


class TransportError(UpstreamError):
    retriable = True


class ServerError(UpstreamError):
    retriable = True


class RateLimitedError(UpstreamError):
    retriable = True

    def __init__(
        self, message: str, *, endpoint: str = "", status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.retry_after = retry_after


class ClientError(UpstreamError):
    retriable = False
    quarantine_reason = "error"


class BadRequestError(ClientError):
    quarantine_reason = "bad_token"
    resync = True


class UnauthorizedError(ClientError):
    pass


class ForbiddenError(ClientError):
    quarantine_reason = "forbidden"
    container_wide = True


class NotFoundError(ClientError):
    quarantine_reason = "gone"
    container_wide = True


class ProtocolError(UpstreamError):
    """The service answered with a payload that does not match the documented shape."""

    retriable = False
    quarantine_reason = "malformed_page"


class CredentialError(NotifierError):
    """No access token can be obtained for a credential."""

    log_level = logging.WARNING

    def __init__(self, message: str, *, credential: str = "") -> None:
        super().__init__(message)
        self.credential = credential


class CredentialUnavailableError(CredentialError):
    """The token endpoint (or the token store) failed transiently; worth retrying later."""

    retriable = True


class InvalidGrantError(CredentialError):
    """The refresh token was rejected (spent or expired): an operator must re-seed it."""

    needs_operator = True


class SinkError(NotifierError):
    """A sink did not accept a batch of events; the page is retried later."""

    retriable = True

    def __init__(self, message: str, *, sink: str = "") -> None:
        super().__init__(message)
        self.sink = sink


class SinkConfigError(SinkError):
    retriable = False


class PartitionLostError(SinkError):
    """Cluster mode: this replica cannot commit for the work partition (revoked, fenced by a
    newer owner, or restoring after a failed transaction); nothing of the page was committed."""

    log_level = logging.WARNING


class StateError(NotifierError):
    """The state store failed. ``kind`` says how, from SQLite's result code, for an
    operation that failed: busy (locked past the busy timeout), full (disk full), io (I/O
    error) or other; None for a store that is not open or cannot be opened."""

    pauses_work = True

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class StateRecordError(StateError):
    """A cluster's state topic holds records this release cannot read (see
    ``notifier.cluster.apply``): what was restored from it is short of rows."""


class StateLockedError(StateError):
    """Another process holds the state file's lock; this one must not start."""
