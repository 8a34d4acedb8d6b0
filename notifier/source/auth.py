"""Access tokens for the Relationship Service: three-legged OAuth refresh with rotation.

``RefreshingTokenProvider`` trades a refresh token for an access token at APS's token endpoint
(``grant_type=refresh_token``, form-encoded, client id and secret only in HTTP Basic). Refresh
tokens rotate: every refresh returns a new one and spends the old one, so the new one is saved
through ``RefreshTokenStore`` *before* the access token that came with it is handed to anyone. If
the save fails the access token is dropped; a crash at any moment therefore never leaves the
store holding only a spent token while the service has used its successor.

Concurrent callers that find the token expired share one refresh (single flight). The refresh
runs in its own task, shielded from the callers, so a caller being cancelled can never interrupt
the window between the token endpoint's answer and the save.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson

from notifier.core.backoff import backoff_delay, parse_retry_after
from notifier.errors import (
    CredentialError,
    CredentialUnavailableError,
    InvalidGrantError,
    NotifierError,
    ProtocolError,
    TransportError,
)
from notifier.source.http import as_client_timeout, map_transport_errors, read_capped
from notifier.source.tokens import (
    InMemoryRefreshTokenStore,
    RefreshObserver,
    RefreshTokenStore,
    SecretLike,
    StaticTokenProvider,
    TokenProvider,
    reveal,
    seed_fingerprint,
)

# The token types live in source.tokens; importing them from here keeps working.
__all__ = [
    "InMemoryRefreshTokenStore",
    "RefreshObserver",
    "RefreshTokenStore",
    "RefreshingTokenProvider",
    "SecretLike",
    "StaticTokenProvider",
    "TokenProvider",
    "basic_authorization",
    "default_token_url",
    "seed_fingerprint",
]

log = logging.getLogger(__name__)

TOKEN_PATH = "/authentication/v2/token"
ENDPOINT = "token"
TOKEN_BODY_LIMIT = 1024 * 1024  # a token response is a few KiB


def default_token_url(base_url: str) -> str:
    return base_url.rstrip("/") + TOKEN_PATH


def basic_authorization(client_id: str, client_secret: str) -> str:
    """``Authorization: Basic base64(client_id:client_secret)`` (RFC 7617, UTF-8)."""
    if ":" in client_id:
        raise ValueError("a client id cannot contain ':' (HTTP Basic)")
    raw = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Grant:
    access_token: str
    expires_in: float


class _InvalidGrant(Exception):
    """The token endpoint answered ``invalid_grant`` for the refresh token sent."""


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


_OAUTH_CODE = re.compile(r"[a-z_]{1,64}")
# Seconds of validity a token must have left to be used after a failed early renewal.
_STILL_VALID = 30.0


class RefreshingTokenProvider:
    """Access tokens from the refresh-token grant, renewed ``refresh_margin`` before expiry."""

    def __init__(
        self,
        name: str,
        session: aiohttp.ClientSession,
        token_url: str,
        client_id: str,
        client_secret: str | SecretLike,
        seed_refresh_token: str | SecretLike,
        store: RefreshTokenStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = 300.0,
        timeout: aiohttp.ClientTimeout | float = 30.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        observer: RefreshObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        refresh_guard: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        """``refresh_guard`` is entered around every refresh and may refuse it by raising
        (cluster mode: prove this replica still owns the credential, so a fenced one never
        spends the refresh token, and keep the partition until the rotated token is stored)."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.name = name
        self._session = session
        self._token_url = token_url
        self._auth = basic_authorization(client_id, reveal(client_secret))
        seed = reveal(seed_refresh_token)
        self._seed = seed
        self._fingerprint = seed_fingerprint(seed)
        self._store = store
        self._clock = clock
        self._margin = refresh_margin
        self._timeout = as_client_timeout(timeout)
        self._max_attempts = max_attempts
        self._backoff = (backoff_base, backoff_cap)
        self._observer = observer
        self._sleep = sleep
        self._refresh_guard = refresh_guard
        self._refresh_token: str | None = None  # loaded from the store on first use
        self._access: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._inflight: asyncio.Task[str] | None = None
        self._dead: str | None = None  # invalid_grant message: fail fast until re-seeded
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"RefreshingTokenProvider(name={self.name!r})"

    async def access_token(self) -> str:
        if self._dead is not None:
            raise InvalidGrantError(self._dead, credential=self.name)
        if self._access is not None and self._clock() < self._renew_at:
            return self._access
        task = self._inflight
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(_consume_exception)
            self._inflight = task
        try:
            return await asyncio.shield(task)
        except CredentialUnavailableError:
            # A transient failure while renewing early: the current token still works a while.
            if self._access is not None and self._clock() < self._expires_at - _STILL_VALID:
                log.warning("credential %s: renewal failed, using the current token until "
                            "it expires", self.name)
                return self._access
            raise

    async def invalidate(self, token: str) -> None:
        if token == self._access:
            log.info("credential %s: access token rejected (401), will refresh", self.name)
            self._access = None

    # -- the refresh ----------------------------------------------------------------------------

    async def _refresh(self) -> str:
        async with contextlib.AsyncExitStack() as stack:
            if self._refresh_guard is not None:
                try:
                    await stack.enter_async_context(self._refresh_guard())
                except NotifierError as exc:
                    raise CredentialUnavailableError(
                        f"credential {self.name!r}: not refreshed: {exc}",
                        credential=self.name,
                    ) from None
            return await self._refresh_now()

    async def _refresh_now(self) -> str:
        refresh_token = await self._current_refresh_token()
        started = self._clock()
        attempt = 0
        reread = False
        while True:
            try:
                body = await self._post(refresh_token)
                break
            except _InvalidGrant:
                # Another writer (a second process, an operator's tool) may have rotated the
                # token since it was loaded: re-read the store once before giving up on it.
                if not reread:
                    reread = True
                    stored = await self._reload_refresh_token()
                    if stored is not None and stored != refresh_token:
                        log.warning("credential %s: refresh token rejected, but the store holds "
                                    "a newer one (rotated by another writer); retrying with it",
                                    self.name)
                        refresh_token = self._refresh_token = stored
                        continue
                raise self._declare_dead() from None
            except _Retry as retry:
                attempt += 1
                if attempt >= self._max_attempts:
                    self._notify("unavailable")
                    raise CredentialUnavailableError(
                        f"credential {self.name!r}: token endpoint unavailable after "
                        f"{attempt} attempts ({retry.reason})",
                        credential=self.name,
                    ) from None
                base, cap = self._backoff
                delay = retry.delay
                if delay is None:
                    delay = backoff_delay(attempt - 1, base=base, cap=cap, rand=random.random())
                log.warning("credential %s: token refresh failed (%s), retrying in %.1fs",
                            self.name, retry.reason, delay)
                await self._sleep(delay)
                started = self._clock()
        grant = await self._accept(body, refresh_token)
        self._access = grant.access_token
        self._expires_at = started + grant.expires_in
        self._renew_at = self._expires_at - min(self._margin, grant.expires_in / 2)
        self.refreshes += 1
        self._notify("ok")
        log.info("credential %s: access token refreshed, valid for %.0fs", self.name,
                 grant.expires_in)
        return grant.access_token

    async def _current_refresh_token(self) -> str:
        if self._refresh_token is None:
            try:
                stored = await self._store.load_refresh_token(self.name, self._fingerprint)
            except Exception as exc:
                self._notify("unavailable")
                raise CredentialUnavailableError(
                    f"credential {self.name!r}: cannot read the stored refresh token "
                    f"({type(exc).__name__})", credential=self.name,
                ) from exc
            if stored is None and not self._seed:
                self._dead = (
                    f"credential {self.name!r} has no refresh token yet: sign in once with "
                    f"`notifier auth login --config FILE --credential {self.name}`, then restart"
                )
                self._notify("missing")
                log.error("%s", self._dead)
                raise InvalidGrantError(self._dead, credential=self.name)
            self._refresh_token = stored if stored is not None else self._seed
        return self._refresh_token

    async def _reload_refresh_token(self) -> str | None:
        """The stored token, read again; None if there is none or the store cannot answer."""
        try:
            return await self._store.load_refresh_token(self.name, self._fingerprint)
        except Exception as exc:
            log.warning("credential %s: cannot re-read the stored refresh token (%s)",
                        self.name, type(exc).__name__)
            return None

    def _declare_dead(self) -> InvalidGrantError:
        self._dead = (
            f"credential {self.name!r}: the refresh token was rejected (invalid_grant: spent, "
            f"revoked or expired). Re-seed it: `notifier auth login --config FILE --credential "
            f"{self.name}` signs in again and stores the new refresh token (or prints it with "
            f"--print, for credentials[].refresh_token in the configuration/secret), then "
            f"restart. Other credentials keep working."
        )
        self._notify("invalid_grant")
        log.error("%s", self._dead)
        return InvalidGrantError(self._dead, credential=self.name)

    async def _post(self, refresh_token: str) -> bytes:
        """One token request; the body of a 200, ``_Retry`` for transient failures."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        try:
            with map_transport_errors(ENDPOINT):
                async with self._session.post(
                    self._token_url, data=form, headers=headers, timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    body = await read_capped(resp, TOKEN_BODY_LIMIT, ENDPOINT)
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
        except (TransportError, ProtocolError) as exc:
            raise _Retry(str(exc)) from None
        if status == 200:
            return body
        if status == 429:
            raise _Retry("HTTP 429", parse_retry_after(retry_after, now=datetime.now(UTC)))
        if status >= 500:
            raise _Retry(f"HTTP {status}")
        code = _oauth_error(body)
        if status == 400 and code == "invalid_grant":
            raise _InvalidGrant
        self._notify("rejected")
        what = "client id/secret rejected" if status in (401, 403) else "token request rejected"
        raise CredentialError(
            f"credential {self.name!r}: {what} (HTTP {status}"
            f"{', ' + code if code else ''})",
            credential=self.name,
        )

    async def _accept(self, body: bytes, spent: str) -> _Grant:
        """Save the rotated refresh token durably, then validate and return the access token."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            self._notify("unavailable")
            raise CredentialUnavailableError(
                f"credential {self.name!r}: token endpoint answered 200 without a JSON object",
                credential=self.name,
            )
        new_refresh = data.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh and new_refresh != spent:
            # The old token is spent from now on: keep the new one in memory whatever happens,
            # and make it durable before anyone sees the access token.
            self._refresh_token = new_refresh
            try:
                await self._store.save_refresh_token(self.name, self._fingerprint, new_refresh)
            except Exception as exc:
                self._notify("store_failed")
                raise CredentialUnavailableError(
                    f"credential {self.name!r}: refreshed, but the rotated refresh token could "
                    f"not be stored ({type(exc).__name__}); the access token was discarded",
                    credential=self.name,
                ) from exc
        access = data.get("access_token")
        expires_in = data.get("expires_in")
        if (
            not isinstance(access, str)
            or not access
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or expires_in <= 0
        ):
            self._notify("unavailable")
            raise CredentialUnavailableError(
                f"credential {self.name!r}: token response lacks access_token/expires_in",
                credential=self.name,
            )
        return _Grant(access, float(expires_in))

    def _notify(self, outcome: str) -> None:
        if self._observer is not None:
            self._observer.on_refresh(self.name, outcome)


def _oauth_error(body: bytes) -> str:
    """The OAuth ``error`` code of a token error body (a short identifier), or ''."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _OAUTH_CODE.fullmatch(code) else ""


def _consume_exception(task: asyncio.Task[str]) -> None:
    """Retrieve a failed refresh's exception even if every caller was cancelled meanwhile."""
    if not task.cancelled():
        task.exception()
