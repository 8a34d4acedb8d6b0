"""A tiny scripted HTTP service on 127.0.0.1 for the client and auth behaviour tests.

Not a simulator: each test scripts the answers it needs (``service.api`` and ``service.token``
are plain callables) and then inspects ``service.seen``, the requests that really arrived.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

TOKEN_PATH = "/authentication/v2/token"
API_ROOT = "/bim360/relationship/v2/containers"
CONTAINER = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    def json(self) -> Any:
        return orjson.loads(self.body)


class Drop(web.Response):
    """Return this from a handler to close the connection without answering."""


Handler = Callable[[Seen], Awaitable[web.StreamResponse] | web.StreamResponse]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def rel(n: int = 0, deleted: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "createdOn": "2024-01-01T00:00:00Z",
        "isReadOnly": False,
        "isService": False,
        "isDeleted": deleted,
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": f"a-{n}",
             "createdOn": "2024-01-01T00:00:00Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": f"i-{n}",
             "createdOn": "2024-01-01T00:00:00Z"},
        ],
    }
    if deleted:
        item["deletedOn"] = "2024-01-02T00:00:00Z"
    return item


def sync_page(n: int = 1, token: str = "next-token", more: bool = False) -> dict[str, Any]:
    return {"current": {"data": [rel(i) for i in range(n)]}, "deleted": {"data": []},
            "moreData": more, "overwrite": False, "nextSyncToken": token}


def basic_credentials(seen: Seen) -> tuple[str, str] | None:
    auth = seen.headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    return user, password


class TokenServer:
    """A rotating token endpoint: each refresh token works once and yields a new pair."""

    def __init__(self, seed: str = "seed-rt", client: tuple[str, str] = ("cid", "csecret"),
                 expires_in: float = 3599) -> None:
        self.valid = {seed}
        self.client = client
        self.expires_in = expires_in
        self.counter = itertools.count(1)
        self.issued: list[tuple[str, str]] = []  # (access, refresh) in order
        self.delay = 0.0
        self.fail_next: list[int] = []  # statuses to answer before working again

    async def __call__(self, seen: Seen) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            return json_response({"error": "server_error"}, status=self.fail_next.pop(0))
        if basic_credentials(seen) != self.client:
            return json_response({"error": "invalid_client"}, status=401)
        form = seen.form
        token = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or token not in self.valid:
            return json_response({"error": "invalid_grant",
                                  "error_description": f"refresh token {token} is spent"},
                                 status=400)
        self.valid.discard(token)
        n = next(self.counter)
        pair = (f"at-{n}", f"rt-{n}")
        self.valid.add(pair[1])
        self.issued.append(pair)
        return json_response({"access_token": pair[0], "token_type": "Bearer",
                              "expires_in": self.expires_in, "refresh_token": pair[1]})


@dataclass
class FakeService:
    api: Handler | None = None
    token: Handler | None = None
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(API_ROOT)]

    def token_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path == TOKEN_PATH]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path, dict(request.query),
                    dict(request.headers), await request.read(),
                    asyncio.get_running_loop().time())
        self.seen.append(seen)
        handler = self.token if request.path == TOKEN_PATH else self.api
        if handler is None:
            return json_response({"detail": "no handler"}, status=404)
        result = handler(seen)
        if not isinstance(result, web.StreamResponse):
            result = await result
        if isinstance(result, Drop) and request.transport is not None:
            request.transport.close()
        return result

    async def __aenter__(self) -> FakeService:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
