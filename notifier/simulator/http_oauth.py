"""``GET /authentication/v2/authorize`` and ``POST /authentication/v2/token`` (reference
section 15); rotation and code rules live in auth.py.

The authorize endpoint has no login page: it stands for a user who signs in and consents at
once, and redirects to ``redirect_uri`` with ``code`` and ``state``, as APS does after consent.
Errors about the client or the redirect URI are answered as a page (never redirected, per
RFC 6749 4.1.2.1); the others are redirected with ``error``.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus, urlencode, urlsplit

from aiohttp import web

from notifier.simulator.bodies import ApiError, oauth_error
from notifier.simulator.http_api import error_response, json_response
from notifier.simulator.state import SimState

TOKEN_PATH = "/authentication/v2/token"
AUTHORIZE_PATH = "/authentication/v2/authorize"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _basic(header: str) -> tuple[str, str]:
    if header[:6].lower() != "basic ":
        raise oauth_error(401, "invalid_client", "Unsupported Authorization scheme.")
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise oauth_error(401, "invalid_client", "Malformed Basic credentials.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise oauth_error(401, "invalid_client", "Malformed Basic credentials.")
    return unquote_plus(client_id), unquote_plus(secret)


class OAuthApi:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [web.post(TOKEN_PATH, self.token, name="token"),
                web.get(AUTHORIZE_PATH, self.authorize, name="authorize")]

    async def authorize(self, request: web.Request) -> web.Response:
        st = self.state
        st.stats.requests["authorize"] += 1
        q = request.query
        redirect = q.get("redirect_uri", "")
        parsed = urlsplit(redirect)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.fragment:
            st.stats.statuses["400"] += 1
            return web.Response(status=400, text="redirect_uri must be an absolute http(s) URL.")
        try:
            if q.get("response_type") != "code":
                raise oauth_error(400, "unsupported_response_type", "response_type must be code.")
            code = st.auth.authorize(q.get("client_id", ""), redirect, q.get("scope", ""),
                                     q.get("code_challenge"),
                                     q.get("code_challenge_method", "plain"))
        except ApiError as err:
            if err.body.get("error") == "invalid_client":
                st.stats.statuses["400"] += 1
                return web.Response(status=400, text="Unknown client_id.")
            answer = {"error": err.body["error"], "error_description": err.body[
                "error_description"]}
        else:
            answer = {"code": code}
        if "state" in q:
            answer["state"] = q["state"]
        sep = "&" if parsed.query else "?"
        st.stats.statuses["302"] += 1
        raise web.HTTPFound(f"{redirect}{sep}{urlencode(answer)}")

    async def token(self, request: web.Request) -> web.Response:
        st = self.state
        st.stats.requests["token"] += 1
        try:
            body = await self._grant(request)
        except ApiError as err:
            st.stats.statuses[str(err.status)] += 1
            response = error_response(err)
            response.headers.update(_NO_STORE)
            return response
        st.stats.statuses["200"] += 1
        return json_response(body, headers=_NO_STORE)

    async def _grant(self, request: web.Request) -> dict[str, object]:
        auth = self.state.auth
        if request.content_type != "application/x-www-form-urlencoded":
            raise oauth_error(400, "invalid_request",
                              "Content-Type must be application/x-www-form-urlencoded.")
        form = await request.post()
        header = request.headers.get("Authorization")
        body_id, body_secret = form.get("client_id"), form.get("client_secret")
        if header:
            if body_id is not None or body_secret is not None:
                raise oauth_error(400, "invalid_request", "client_id is not supported in the "
                                  "request body when Authorization headers are present")
            client_id, secret = _basic(header)
        else:
            auth.counters.body_credentials += 1
            client_id = body_id if isinstance(body_id, str) else ""
            secret = body_secret if isinstance(body_secret, str) else ""
        client = auth.check_client(client_id, secret)
        grant = form.get("grant_type")
        if grant == "refresh_token":
            token = form.get("refresh_token")
            if not isinstance(token, str) or not token:
                raise oauth_error(400, "invalid_request", "refresh_token is required.")
            return auth.refresh(client, token)
        if grant == "client_credentials":
            return auth.client_credentials(client)
        if grant is None:
            raise oauth_error(400, "invalid_request", "grant_type is required.")
        if grant == "authorization_code":
            code, redirect = form.get("code"), form.get("redirect_uri")
            verifier = form.get("code_verifier")
            if not isinstance(code, str) or not code or not isinstance(redirect, str):
                raise oauth_error(400, "invalid_request", "code and redirect_uri are required.")
            return auth.exchange_code(client, code, redirect,
                                      verifier if isinstance(verifier, str) else None)
        shown = grant if isinstance(grant, str) else "?"
        raise oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type '{shown}'.")
