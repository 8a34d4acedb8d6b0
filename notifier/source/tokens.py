"""Token plumbing for the Relationship Service: what providers and stores look like, and the
simple ones (a fixed token, an in-memory store). The refreshing provider is in source.auth."""

from __future__ import annotations

import hashlib
from typing import Protocol


class SecretLike(Protocol):
    """Anything holding a secret the way pydantic's ``SecretStr`` does."""

    def get_secret_value(self) -> str: ...


class RefreshTokenStore(Protocol):
    """Where rotated refresh tokens live (the state store implements it)."""

    async def load_refresh_token(self, credential: str, seed_fingerprint: str) -> str | None:
        """The newest stored refresh token for this credential and seed, or None."""
        ...

    async def save_refresh_token(
        self, credential: str, seed_fingerprint: str, refresh_token: str
    ) -> None:
        """Store the newest refresh token; durable when it returns."""
        ...


class TokenProvider(Protocol):
    """Bearer tokens for one credential."""

    async def access_token(self) -> str:
        """A currently valid access token (refreshing it first if needed)."""
        ...

    async def invalidate(self, token: str) -> None:
        """``token`` got a 401: the next ``access_token()`` refreshes, unless one already did."""
        ...


class RefreshObserver(Protocol):
    """Metrics hook; ``outcome`` is ok, invalid_grant, missing (no refresh token at all),
    rejected, unavailable or store_failed."""

    def on_refresh(self, credential: str, outcome: str) -> None: ...


def seed_fingerprint(seed_refresh_token: str) -> str:
    """sha256 hex of the configured seed: a re-seeded config overrides the stored rotated token."""
    return hashlib.sha256(seed_refresh_token.encode()).hexdigest()


def reveal(value: str | SecretLike) -> str:
    return value if isinstance(value, str) else value.get_secret_value()


class InMemoryRefreshTokenStore:
    """A ``RefreshTokenStore`` in a dict, for tests and one-off runs."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str], str] = {}
        self.saves = 0

    async def load_refresh_token(self, credential: str, seed_fingerprint: str) -> str | None:
        return self.tokens.get((credential, seed_fingerprint))

    async def save_refresh_token(
        self, credential: str, seed_fingerprint: str, refresh_token: str
    ) -> None:
        self.tokens[(credential, seed_fingerprint)] = refresh_token
        self.saves += 1


class StaticTokenProvider:
    """A fixed access token (tests, one-off jobs); a 401 with it ends in ``UnauthorizedError``."""

    def __init__(self, token: str | SecretLike) -> None:
        self._token = reveal(token)

    def __repr__(self) -> str:
        return "StaticTokenProvider(<token>)"

    async def access_token(self) -> str:
        return self._token

    async def invalidate(self, token: str) -> None:
        return None
