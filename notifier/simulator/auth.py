"""Three-legged OAuth as the simulator models it: refresh-token rotation and access tokens.

Rotation semantics (the docs only say every refresh returns a new refresh token):

* A refresh with refresh token R returns a new access token A' and a new refresh token R'
  (R' is always different from R). R is single use: spent at once, a second use fails (the
  default, as the real service promises nothing more).
* ``rotation_grace`` (opt-in): R is spent only when its successor is first used: when A'
  authenticates a request or R' is presented for a refresh. Until then a retry with R is
  honoured and returns the same pair (A', R') (a fresh A' if the first one expired meanwhile),
  so a client that crashed between receiving and persisting R' can recover with R.
* A spent, unknown, expired or other client's refresh token gives 400 ``invalid_grant``.
* The authorization-code flow: ``authorize`` stands in for the user signing in and consenting
  (always as ``sim-user``) and issues a single-use code (5 minutes) bound to the client, the
  redirect URI and the PKCE challenge; ``exchange_code`` checks all three and issues an access
  token with a fresh refresh token, as the real service does.
* Access tokens expire after ``access_token_lifetime`` seconds (default 3599); the static
  access token from the configuration never expires. ``client_credentials`` tokens are
  two-legged: the token endpoint issues them but relationship endpoints refuse them (403).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from notifier.simulator import bodies
from notifier.simulator.config import STATIC_TOKEN_USER, Knobs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Principal:
    user: str
    two_legged: bool = False


@dataclass(slots=True)
class _Access:
    user: str
    expires_at: float
    parent: str | None
    two_legged: bool = False


@dataclass(slots=True)
class _Refresh:
    user: str
    client_id: str
    expires_at: float
    parent: str | None = None
    spent: bool = False
    successor: tuple[str, str] | None = None


@dataclass(slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    user: str
    expires_at: float


CODE_LIFETIME = 300.0
SCOPES = frozenset({"data:read", "data:write", "data:create", "data:search", "account:read",
                    "account:write", "bucket:read", "viewables:read", "user-profile:read",
                    "openid"})


@dataclass(slots=True)
class AuthCounters:
    refreshes: int = 0
    replays: int = 0
    invalid_grants: int = 0
    spent_by_successor: int = 0
    client_credentials: int = 0
    body_credentials: int = 0
    codes_issued: int = 0
    codes_exchanged: int = 0
    expired_access: int = 0
    by_user: dict[str, int] = field(default_factory=dict)


class AuthState:
    """Clients, refresh tokens and access tokens of one simulator."""

    def __init__(self, knobs: Knobs, clock: Callable[[], float], *, client_id: str,
                 client_secret: str, static_token: str | None) -> None:
        self._knobs = knobs
        self._clock = clock
        self.clients: dict[str, str] = {client_id: client_secret}
        self.default_client = client_id
        self.static_token = static_token
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._codes: dict[str, _Code] = {}
        self.counters = AuthCounters()

    # -- seeding -------------------------------------------------------------------------------

    def add_refresh_token(self, token: str | None = None, user: str = "sim-user",
                          client_id: str | None = None) -> str:
        """Register a usable refresh token (a new credential seed) and return it."""
        token = token or "rt." + secrets.token_urlsafe(32)
        expires_at = self._clock() + self._knobs.refresh_token_lifetime
        self._refresh[token] = _Refresh(user=user, client_id=client_id or self.default_client,
                                        expires_at=expires_at)
        return token

    def expire_access_tokens(self) -> int:
        """Make every issued access token expired now (the static one is unaffected)."""
        now = self._clock()
        for rec in self._access.values():
            rec.expires_at = min(rec.expires_at, now - 1)
        return len(self._access)

    def refresh_token_state(self, token: str) -> str:
        """"unknown", "spent", "expired", "rotated" (successor issued, not used yet) or "fresh"."""
        rec = self._refresh.get(token)
        if rec is None:
            return "unknown"
        if rec.spent:
            return "spent"
        if rec.expires_at <= self._clock():
            return "expired"
        return "rotated" if rec.successor else "fresh"

    # -- bearer tokens --------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> Principal:
        """The caller behind an ``Authorization`` header; a 401 ApiError if there is none."""
        if not header or not header[:7].lower() == "bearer " or not header[7:].strip():
            raise bodies.gateway(401, "Authorization header is missing or is not a Bearer token",
                                 "AUTH-006")
        token = header[7:].strip()
        if self.static_token is not None and token == self.static_token:
            return Principal(STATIC_TOKEN_USER)
        rec = self._access.get(token)
        if rec is None:
            raise bodies.gateway(401, "The token used in the request is invalid", "AUTH-006")
        if rec.expires_at <= self._clock():
            self.counters.expired_access += 1
            raise bodies.gateway(401, "The token used in the request is expired", "AUTH-006")
        if rec.parent is not None:
            self._spend(rec.parent)
            rec.parent = None
        return Principal(rec.user, rec.two_legged)

    def _spend(self, token: str) -> None:
        parent = self._refresh.get(token)
        if parent is not None and not parent.spent:
            parent.spent = True
            self.counters.spent_by_successor += 1

    def _issue_access(self, user: str, parent: str | None, two_legged: bool = False
                      ) -> tuple[str, int]:
        token = "at." + secrets.token_urlsafe(32)
        lifetime = self._knobs.access_token_lifetime
        self._access[token] = _Access(user, self._clock() + lifetime, parent, two_legged)
        return token, max(1, round(lifetime))

    # -- the token endpoint ---------------------------------------------------------------------

    def check_client(self, client_id: str | None, client_secret: str | None) -> str:
        if not client_id or self.clients.get(client_id) != client_secret:
            raise bodies.oauth_error(401, "invalid_client",
                                     "The client credentials are invalid.")
        return client_id

    def refresh(self, client_id: str, token: str) -> dict[str, Any]:
        """``grant_type=refresh_token``: a new pair, or the same pair on an honoured retry."""
        rec = self._refresh.get(token)
        now = self._clock()
        if rec is None or rec.spent or rec.expires_at <= now or rec.client_id != client_id:
            self.counters.invalid_grants += 1
            raise bodies.oauth_error(400, "invalid_grant",
                                     "The refresh token is invalid or expired.")
        if rec.parent is not None:
            self._spend(rec.parent)
            rec.parent = None
        if rec.successor is not None:
            access, new_refresh = rec.successor
            self.counters.replays += 1
            arec = self._access.get(access)
            if arec is None or arec.expires_at <= now:
                access, _ = self._issue_access(rec.user, token)
                rec.successor = (access, new_refresh)
            expires_in = max(1, round(self._access[access].expires_at - now))
            return self._grant(access, expires_in, new_refresh)
        access, expires_in = self._issue_access(rec.user, token)
        new_refresh = self.add_refresh_token(user=rec.user, client_id=client_id)
        self._refresh[new_refresh].parent = token
        if self._knobs.rotation_grace:
            rec.successor = (access, new_refresh)
        else:
            rec.spent = True
        self.counters.refreshes += 1
        self.counters.by_user[rec.user] = self.counters.by_user.get(rec.user, 0) + 1
        log.debug("refresh token rotated for user %s", rec.user)
        return self._grant(access, expires_in, new_refresh)

    def authorize(self, client_id: str, redirect_uri: str, scope: str,
                  challenge: str | None, method: str, user: str = "sim-user") -> str:
        """The user signed in and consented: a single-use authorization code."""
        if client_id not in self.clients:
            raise bodies.oauth_error(400, "invalid_client", "Unknown client_id.")
        unknown = [s for s in scope.split() if s not in SCOPES]
        if not scope.split() or unknown:
            raise bodies.oauth_error(400, "invalid_scope", f"Invalid scope: {scope!r}.")
        if challenge is not None and method not in ("S256", "plain"):
            raise bodies.oauth_error(400, "invalid_request",
                                     "code_challenge_method must be S256 or plain.")
        code = "code." + secrets.token_urlsafe(24)
        self._codes[code] = _Code(client_id, redirect_uri, challenge, method, user,
                                  self._clock() + CODE_LIFETIME)
        self.counters.codes_issued += 1
        return code

    def exchange_code(self, client_id: str, code: str, redirect_uri: str,
                      verifier: str | None) -> dict[str, Any]:
        """``grant_type=authorization_code``: single use, same client and redirect, PKCE."""
        rec = self._codes.pop(code, None)  # single use, whatever happens next
        if (rec is None or rec.expires_at <= self._clock() or rec.client_id != client_id
                or rec.redirect_uri != redirect_uri):
            self.counters.invalid_grants += 1
            raise bodies.oauth_error(400, "invalid_grant",
                                     "The authorization code is invalid or expired.")
        if rec.challenge is not None:
            if not verifier:
                raise bodies.oauth_error(400, "invalid_request", "code_verifier is required.")
            if rec.method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                expected = verifier
            if not secrets.compare_digest(expected, rec.challenge):
                self.counters.invalid_grants += 1
                raise bodies.oauth_error(400, "invalid_grant", "code_verifier does not match.")
        access, expires_in = self._issue_access(rec.user, None)
        refresh = self.add_refresh_token(user=rec.user, client_id=client_id)
        self.counters.codes_exchanged += 1
        return self._grant(access, expires_in, refresh)

    def client_credentials(self, client_id: str) -> dict[str, Any]:
        self.counters.client_credentials += 1
        access, expires_in = self._issue_access(f"app:{client_id}", None, two_legged=True)
        return {"access_token": access, "token_type": "Bearer", "expires_in": expires_in}

    @staticmethod
    def _grant(access: str, expires_in: int, refresh: str) -> dict[str, Any]:
        return {"access_token": access, "token_type": "Bearer", "expires_in": expires_in,
                "refresh_token": refresh}
