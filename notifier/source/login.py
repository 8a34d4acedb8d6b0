"""Signing in once: the three-legged authorization-code flow with PKCE, for a first refresh token.

The Relationship Service accepts only user (three-legged) tokens, and a refresh token can only be
born from a person signing in. ``sign_in`` does that once per credential: it builds the APS
authorize URL (``response_type=code``, ``code_challenge_method=S256``, a random ``state``),
listens on 127.0.0.1 for the browser's redirect to the callback, checks ``state``, and exchanges
the code at the token endpoint (``grant_type=authorization_code`` with the ``code_verifier``,
client id and secret in HTTP Basic). What to do with the refresh token (store it, print it) is
the caller's business. The pure parts (PKCE, the URL, reading the callback) are functions of
their inputs; the listener and the exchange translate aiohttp errors into ``LoginError``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web

from notifier.errors import CredentialError, TransportError
from notifier.source.auth import basic_authorization
from notifier.source.http import map_transport_errors

log = logging.getLogger(__name__)

AUTHORIZE_PATH = "/authentication/v2/authorize"
CALLBACK_PATH = "/callback"
DEFAULT_PORT = 8765
DEFAULT_SCOPES = ("data:read",)
REFRESH_TOKEN_LIFETIME = 15 * 24 * 3600.0  # APS: a refresh token lives 15 days from issue


class LoginError(CredentialError):
    """Signing in did not produce a refresh token (denied, timed out, code rejected...)."""


@dataclass(frozen=True, slots=True)
class Pkce:
    """RFC 7636: a random verifier and its S256 challenge."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls, verifier: str | None = None) -> Pkce:
        v = verifier or secrets.token_urlsafe(64)  # 86 characters, within 43..128
        digest = hashlib.sha256(v.encode("ascii")).digest()
        return cls(v, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


@dataclass(frozen=True, slots=True)
class Grant:
    """The token endpoint's answer to a code exchange (secrets: never log them)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: float


def redirect_uri(port: int) -> str:
    """The callback URL to register in the APS app (a loopback IP literal, RFC 8252)."""
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def authorize_url(base_url: str, *, client_id: str, redirect: str, scopes: tuple[str, ...],
                  state: str, challenge: str) -> str:
    """The URL the user opens to sign in and consent."""
    query = urlencode({
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": " ".join(scopes),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    })
    return f"{base_url.rstrip('/')}{AUTHORIZE_PATH}?{query}"


def read_callback(query: Mapping[str, str], expected_state: str) -> str:
    """The authorization code from the redirect's query, or LoginError saying what went wrong."""
    if not secrets.compare_digest(query.get("state", ""), expected_state):
        raise LoginError("the sign-in answer does not belong to this login (state mismatch)")
    if "error" in query:
        detail = query.get("error_description") or query["error"]
        raise LoginError(f"sign-in refused: {detail}")
    code = query.get("code", "")
    if not code:
        raise LoginError("the sign-in answer carries no authorization code")
    return code


_PAGE = ("<!doctype html><meta charset=utf-8><title>notifier</title>"
         "<p>{}</p><p>You can close this window.</p>")


class CallbackListener:
    """Listens on 127.0.0.1:``port`` for one redirect to /callback; an async context manager."""

    def __init__(self, port: int, expected_state: str) -> None:
        self.port = port
        self._state = expected_state
        self._result: asyncio.Future[str] | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> CallbackListener:
        self._result = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get(CALLBACK_PATH, self._callback)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise LoginError(f"cannot listen on 127.0.0.1:{self.port} for the sign-in callback "
                             f"({exc.strerror or exc}); choose another --port") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def code(self, wait: float) -> str:
        """Wait for the redirect; LoginError if it is an error or does not come in time."""
        assert self._result is not None, "use as an async context manager"
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), wait)
        except TimeoutError:
            raise LoginError(f"no sign-in within {wait:.0f} s") from None

    async def _callback(self, request: web.Request) -> web.Response:
        assert self._result is not None
        try:
            code = read_callback(request.query, self._state)
        except LoginError as exc:
            if not self._result.done() and "state mismatch" not in str(exc):
                self._result.set_exception(exc)
            return web.Response(status=400, text=_PAGE.format(f"Sign-in failed: {exc}"),
                                content_type="text/html")
        if not self._result.done():
            self._result.set_result(code)
        return web.Response(text=_PAGE.format("Signed in: the notifier has its token."),
                            content_type="text/html")


async def exchange_code(session: aiohttp.ClientSession, token_url: str, *, client_id: str,
                        client_secret: str, code: str, redirect: str, verifier: str,
                        request_timeout: float = 30.0) -> Grant:
    """``grant_type=authorization_code`` at the token endpoint; LoginError unless it yields a
    refresh token."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": verifier}
    headers = {"Authorization": basic_authorization(client_id, client_secret),
               "Accept": "application/json"}
    try:
        with map_transport_errors("token"):
            async with session.post(token_url, data=form, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=request_timeout),
                                    allow_redirects=False) as resp:
                status, body = resp.status, await resp.read()
    except TransportError as exc:
        raise LoginError(f"cannot reach the token endpoint: {exc}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if status != 200:
        error = data.get("error", "") if isinstance(data, dict) else ""
        text = data.get("error_description", "") if isinstance(data, dict) else ""
        raise LoginError(f"the token endpoint refused the code (HTTP {status}"
                         f"{', ' + error if error else ''}{': ' + text if text else ''})")
    if not isinstance(data, dict):
        raise LoginError("the token endpoint answered 200 without a JSON object")
    access, refresh, expires_in = (data.get("access_token"), data.get("refresh_token"),
                                   data.get("expires_in"))
    if not isinstance(refresh, str) or not refresh:
        raise LoginError("the token endpoint issued no refresh token (is the APS app a "
                         "three-legged app, and the scope right?)")
    if not isinstance(access, str) or not isinstance(expires_in, int | float):
        raise LoginError("the token endpoint's answer lacks access_token/expires_in")
    return Grant(access, refresh, float(expires_in))


async def sign_in(session: aiohttp.ClientSession, *, base_url: str, token_url: str,
                  client_id: str, client_secret: str, port: int = DEFAULT_PORT,
                  scopes: tuple[str, ...] = DEFAULT_SCOPES, wait: float = 300.0,
                  show: Callable[[str, str], None]) -> Grant:
    """The whole flow: listen, ``show(url, redirect)`` the authorize URL, wait, exchange."""
    pkce = Pkce.new()
    state = secrets.token_urlsafe(24)
    async with CallbackListener(port, state) as listener:
        redirect = redirect_uri(listener.port)
        url = authorize_url(base_url, client_id=client_id, redirect=redirect, scopes=scopes,
                            state=state, challenge=pkce.challenge)
        show(url, redirect)
        code = await listener.code(wait)
    return await exchange_code(session, token_url, client_id=client_id,
                               client_secret=client_secret, code=code, redirect=redirect,
                               verifier=pkce.verifier)
