"""A real webhook receiver for integration tests: aiohttp on 127.0.0.1, verifying every call.

Every call is checked with the ``standardwebhooks`` reference library; a call that does not
verify is answered 401 and counted in ``bad_signatures``. Every event received is checked
against the event contract (tests/contract.py); a broken one fails the test on close. Failure
modes are switched at run time:

- ``ok``: 200 for everything
- ``fail_random``: 500 for a share (``fail_rate``) of calls, chosen by a seeded generator
- ``fail``: 500 for everything
- ``gone``: 410 for everything
- ``rate_limited``: 429 with ``Retry-After: <retry_after>`` for the next ``rate_limit_calls`` calls
- ``slow``: wait ``slow_seconds`` before answering 200
- ``redirect``: 307 to another URL
- ``echo_auth``: 401 whose body quotes the call's Authorization header (a careless server)
- ``down()`` / ``up()``: stop listening (connection refused) and listen again on the same port
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.contract import problems

MODES = ("ok", "fail_random", "fail", "gone", "rate_limited", "slow", "redirect", "echo_auth")


@dataclass(slots=True)
class Call:
    """One call as the receiver saw it."""

    webhook_id: str
    timestamp: str
    content_type: str
    status: int
    at: float
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False, default_factory=dict)


class WebhookReceiver:
    """An aiohttp app recording verified CloudEvents; ``events`` holds those answered 2xx."""

    def __init__(
        self,
        secret: str,
        *,
        fail_rate: float = 0.1,
        retry_after: str = "1",
        rate_limit_calls: int = 1,
        slow_seconds: float = 2.0,
        seed: int = 1234,
    ) -> None:
        self._webhook = Webhook(secret)
        self.mode = "ok"
        self.fail_rate = fail_rate
        self.retry_after = retry_after
        self.rate_limit_calls = rate_limit_calls
        self.slow_seconds = slow_seconds
        self._random = random.Random(seed)
        self.calls: list[Call] = []
        self.events: list[dict[str, Any]] = []  # verified and answered 2xx, in arrival order
        self.bodies: dict[str, bytes] = {}  # event id -> the body of that event as received
        self.bad_signatures = 0
        self.in_flight: list[bytes] = []  # bodies of the calls being answered (slow mode)
        self.contract_problems: list[str] = []  # events that break notifier/schemas
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()
        if exc_type is None:
            assert not self.contract_problems, "events broke the contract:\n" + "\n".join(
                self.contract_problems[:20])

    async def up(self) -> None:
        """Listen (again) on 127.0.0.1, on the same port as before if there was one."""
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Stop listening and drop open connections: callers get connection refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        """Wait until ``predicate()`` holds (checked after every call), or fail the test."""
        deadline = time.monotonic() + within
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"receiver: condition not met within {within}s "
                    f"({len(self.calls)} calls, {len(self.events)} events)"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
            except TimeoutError:
                pass

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return self._record(request, body, 401)
        status = self._choose_status()
        if self.mode == "slow":
            self.in_flight.append(body)
            try:
                await asyncio.sleep(self.slow_seconds)
            finally:
                self.in_flight.remove(body)
        if status == 429:
            resp = self._record(request, body, 429)
            resp.headers["Retry-After"] = self.retry_after
            return resp
        if status == 307:
            resp = self._record(request, body, 307)
            resp.headers["Location"] = f"http://127.0.0.1:{self.port}/elsewhere"
            return resp
        if self.mode == "echo_auth":
            self._record(request, body, 401)
            return web.Response(status=401, text="invalid credentials: Authorization: "
                                f"{request.headers.get('Authorization', '')}")
        if 200 <= status < 300:
            self._accept(request.content_type, body)
        return self._record(request, body, status)

    def _choose_status(self) -> int:
        match self.mode:
            case "fail":
                return 500
            case "fail_random":
                return 500 if self._random.random() < self.fail_rate else 200
            case "gone":
                return 410
            case "rate_limited":
                if self.rate_limit_calls > 0:
                    self.rate_limit_calls -= 1
                    return 429
                return 200
            case "redirect":
                return 307
            case _:
                return 200

    def _accept(self, content_type: str, body: bytes) -> None:
        parsed = orjson.loads(body)
        if content_type == "application/cloudevents-batch+json":
            assert isinstance(parsed, list), "a batch must be a JSON array"
            for event in parsed:
                self._check(event)
                self.events.append(event)
                self.bodies[event["id"]] = orjson.dumps(event)
        else:
            assert content_type == "application/cloudevents+json", content_type
            self._check(parsed)
            self.events.append(parsed)
            self.bodies[parsed["id"]] = body

    def _check(self, event: dict[str, Any]) -> None:
        """Validate against the contract; problems fail the test when the receiver closes."""
        found = problems(event)
        if found:
            self.contract_problems.append(f"{event.get('id')}: " + "; ".join(found))

    def _record(self, request: web.Request, body: bytes, status: int) -> web.Response:
        self.calls.append(
            Call(
                webhook_id=request.headers.get("webhook-id", ""),
                timestamp=request.headers.get("webhook-timestamp", ""),
                content_type=request.content_type,
                status=status,
                at=time.time(),
                body=body,
                headers=dict(request.headers),
            )
        )
        self._changed.set()
        return web.Response(status=status, text="" if status < 300 else "nope")
