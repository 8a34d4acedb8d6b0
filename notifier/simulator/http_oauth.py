"""``POST /authentication/v2/token`` (reference section 15); rotation rules live in auth.py."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from aiohttp import web

from notifier.simulator.bodies import ApiError, oauth_error
from notifier.simulator.http_api import error_response, json_response
from notifier.simulator.state import SimState

TOKEN_PATH = "/authentication/v2/token"
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
        return [web.post(TOKEN_PATH, self.token, name="token")]

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
            raise oauth_error(400, "invalid_grant", "The authorization code is invalid or expired.")
        shown = grant if isinstance(grant, str) else "?"
        raise oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type '{shown}'.")
