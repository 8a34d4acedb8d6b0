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
    │   └── SinkConfigError         a sink cannot work as configured        not retriable
    └── StateError                  the state store failed
        └── StateLockedError        another process holds the state file (exit status 2)

Whether an error is worth retrying is data on the class (``retriable``). Errors carry context
(subscription, endpoint, status, sink) but never secrets.
"""

from __future__ import annotations

from typing import ClassVar


class NotifierError(Exception):
    """Base of every error the notifier raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(NotifierError):
    """The configuration is invalid; ``problems`` holds one line per bad field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class UpstreamError(NotifierError):
    """A call to the Relationship Service failed."""

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


class BadRequestError(ClientError):
    pass


class UnauthorizedError(ClientError):
    pass


class ForbiddenError(ClientError):
    pass


class NotFoundError(ClientError):
    pass


class ProtocolError(UpstreamError):
    """The service answered with a payload that does not match the documented shape."""

    retriable = False


class CredentialError(NotifierError):
    """No access token can be obtained for a credential."""

    def __init__(self, message: str, *, credential: str = "") -> None:
        super().__init__(message)
        self.credential = credential


class CredentialUnavailableError(CredentialError):
    """The token endpoint (or the token store) failed transiently; worth retrying later."""

    retriable = True


class InvalidGrantError(CredentialError):
    """The refresh token was rejected (spent or expired): an operator must re-seed it."""


class SinkError(NotifierError):
    """A sink did not accept a batch of events; the page is retried later."""

    retriable = True

    def __init__(self, message: str, *, sink: str = "") -> None:
        super().__init__(message)
        self.sink = sink


class SinkConfigError(SinkError):
    retriable = False


class StateError(NotifierError):
    """The state store failed."""


class StateLockedError(StateError):
    """Another process holds the state file's lock; this one must not start."""
