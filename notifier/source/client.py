"""The Relationship Service v2 client: requests, retries, rate budget, typed answers.

One ``RelationshipClient`` per credential. Every attempt (retries too) takes one request from the
credential's ``RequestBudget``, so the service's per-user limit is respected by construction. On
a 429 the whole credential pauses for ``Retry-After``; 5xx and transport failures are retried
with capped exponential backoff and full jitter; a 401 triggers one token refresh; any other
4xx fails at once with the service's ``detail``. Answers are validated by ``source.parse``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import orjson

from notifier.core.backoff import backoff_delay, parse_retry_after
from notifier.core.budget import Priority, RequestBudget
from notifier.errors import (
    BadRequestError,
    ClientError,
    ForbiddenError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UpstreamError,
)
from notifier.source import parse
from notifier.source.auth import TokenProvider
from notifier.source.http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    as_client_timeout,
    map_transport_errors,
    read_capped,
)
from notifier.source.keepalive import KeepAlivePool
from notifier.source.models import Relationship, SearchPage, SyncPage, SyncStatusResponse
from notifier.source.slots import Slots, take_both, wait_both

log = logging.getLogger(__name__)

T = TypeVar("T")

API_PATH = "/bim360/relationship/v2/containers"
MAX_DOMAINS = 20
MAX_ENTITIES = 20
MAX_BATCH = 50
MAX_PAGE_LIMIT = 100
# Sent on the lean kept-alive path when the client has one (see source.keepalive): the small
# call every container check makes, and the sync pages every drain fetches (a resync of a
# million relationships is 10,000 of them). The rare calls go through aiohttp.
KEPT_ALIVE_ENDPOINTS = frozenset({"syncStatus", "sync"})


class ClientObserver(Protocol):
    """Metrics hooks. ``outcome``: ok, rate_limited, server_error, transport_error,
    unauthorized, client_error, protocol_error."""

    def on_request(self, endpoint: str, outcome: str, seconds: float) -> None: ...

    def on_rate_limited(self, retry_after_seconds: float) -> None: ...

    def on_budget(self, priority: str, waited_seconds: float) -> None:
        """A request got its slot in the credential's budget after ``waited_seconds``."""


_CLIENT_ERRORS: dict[int, type[ClientError]] = {400: BadRequestError, 401: UnauthorizedError,
                                                403: ForbiddenError, 404: NotFoundError}


class RelationshipClient:
    """Calls one credential's view of the Relationship Service; safe to share across tasks."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        credential_name: str,
        tokens: TokenProvider,
        budget: RequestBudget,
        region: str | None = None,
        timeout: aiohttp.ClientTimeout | float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        concurrency: int = 8,
        deadline: float = 600.0,
        observer: ClientObserver | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        keepalive: KeepAlivePool | None = None,
    ) -> None:
        """``keepalive``: the lean HTTP path for syncStatus calls (one per container check);
        without it every call goes through ``session``."""
        if max_attempts < 1 or concurrency < 1 or deadline <= 0:
            raise ValueError("max_attempts and concurrency must be >= 1, deadline > 0")
        self.credential_name = credential_name
        self._session = session
        self._root = base_url.rstrip("/") + API_PATH
        self._tokens = tokens
        self._budget = budget
        self._region = region
        self._timeout = as_client_timeout(timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._slots = Slots(concurrency)
        # Checks may hold all but one of the slots: a check waiting for the budget holds its
        # slot, and a sync page (which the budget grants first) must find one to wait in.
        self._check_slots = Slots(max(1, concurrency - 1))
        self._page_slots = Slots(sys.maxsize)  # sync pages: the concurrency slots alone
        self._deadline = deadline
        self._observer = observer
        self._max_body = max_response_bytes
        self._keepalive = keepalive

    def __repr__(self) -> str:
        return f"RelationshipClient(credential={self.credential_name!r}, root={self._root!r})"

    # -- endpoints ------------------------------------------------------------------------------

    async def sync(
        self,
        container_id: str,
        sync_token: str | None = None,
        domains: Sequence[str] | None = None,
        *,
        priority: Priority = "sync",
    ) -> SyncPage:
        """One page of ``relationships:sync``; ``domains`` filters only a bootstrap (no token).
        ``priority`` ``status``: the page is a check (see notifier.core.budget)."""
        body: dict[str, Any] = {}
        if sync_token is not None:
            body["syncToken"] = sync_token
        elif domains:
            if len(domains) > MAX_DOMAINS:
                raise ValueError(f"at most {MAX_DOMAINS} domains, got {len(domains)}")
            body["filters"] = {"domains": list(domains)}
        return await self._request(
            "sync", "POST", self._url(container_id, "relationships:sync"),
            parse.parse_sync_page, json=body, priority=priority,
        )

    async def sync_status(
        self, container_id: str, items: Sequence[tuple[str, str | None]]
    ) -> SyncStatusResponse:
        """``relationships:syncStatus`` for ``(syncToken, referenceId)`` pairs, in one call."""
        if not items:
            return SyncStatusResponse(results=[], errors=[])
        body = [
            {"syncToken": token} if ref is None else {"syncToken": token, "referenceId": ref}
            for token, ref in items
        ]
        return await self._request(
            "syncStatus", "POST", self._url(container_id, "relationships:syncStatus"),
            parse.parse_sync_status, json=body, priority="status",
        )

    async def search(
        self,
        container_id: str,
        params: Mapping[str, str],
        continuation_token: str | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> SearchPage:
        """One page of ``relationships:search`` (``params``: domain, type, id, withDomain...)."""
        query = dict(params)
        query.update(self._paging(continuation_token, page_limit))
        return await self._request(
            "search", "GET", self._url(container_id, "relationships:search"),
            parse.parse_search_page, params=query,
        )

    async def intersect(
        self,
        container_id: str,
        entities: Sequence[Mapping[str, str]],
        with_entities: Sequence[Mapping[str, str]] | None = None,
        *,
        include_deleted: bool = False,
        only_deleted: bool = False,
        continuation_token: str | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
    ) -> SearchPage:
        """One page of ``relationships:intersect`` for 1-20 fully qualified ``entities``."""
        if not 1 <= len(entities) <= MAX_ENTITIES:
            raise ValueError(f"entities must have 1..{MAX_ENTITIES} items, got {len(entities)}")
        body: dict[str, Any] = {"entities": [dict(e) for e in entities]}
        if with_entities:
            if len(with_entities) > MAX_ENTITIES:
                raise ValueError(f"with_entities must have at most {MAX_ENTITIES} items")
            body["withEntities"] = [dict(e) for e in with_entities]
        query = self._paging(continuation_token, page_limit)
        if include_deleted:
            query["includeDeleted"] = "true"
        if only_deleted:
            query["onlyDeleted"] = "true"
        return await self._request(
            "intersect", "POST", self._url(container_id, "relationships:intersect"),
            parse.parse_search_page, json=body, params=query,
        )

    async def batch(self, container_id: str, ids: Sequence[str]) -> list[Relationship]:
        """Relationships by id (``relationships:batch``), in calls of at most 50 ids."""
        found: list[Relationship] = []
        for start in range(0, len(ids), MAX_BATCH):
            chunk = list(ids[start:start + MAX_BATCH])
            found.extend(await self._request(
                "batch", "POST", self._url(container_id, "relationships:batch"),
                parse.parse_relationship_list, json=chunk,
            ))
        return found

    async def get(self, container_id: str, relationship_id: str) -> Relationship:
        """One relationship by id."""
        path = "relationships/" + quote(relationship_id, safe="")
        return await self._request(
            "get", "GET", self._url(container_id, path), parse.parse_relationship,
        )

    async def call(self, endpoint: str, url: str, parser: Callable[[bytes, str], T], *,
                   params: Mapping[str, str] | None = None) -> T:
        """GET another APS endpoint with this client's token, budget, retries and error
        mapping (the hub and project listings use a client built on their own budget)."""
        return await self._request(endpoint, "GET", url, parser, params=params,
                                   priority="status")

    # -- plumbing -------------------------------------------------------------------------------

    def _url(self, container_id: str, tail: str) -> str:
        return f"{self._root}/{quote(container_id, safe='')}/{tail}"

    @staticmethod
    def _paging(continuation_token: str | None, page_limit: int) -> dict[str, str]:
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be in 1..{MAX_PAGE_LIMIT}, got {page_limit}")
        query = {"pageLimit": str(page_limit)}
        if continuation_token is not None:
            query["continuationToken"] = continuation_token
        return query

    def _headers(self, token: str, has_body: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self._region:
            headers["x-ads-region"] = self._region
        return headers

    async def _request(
        self,
        endpoint: str,
        method: str,
        url: str,
        parser: Callable[[bytes, str], T],
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        priority: Priority = "sync",
    ) -> T:
        """Send until a 2xx (parsed with ``parser``), a final error, or the deadline."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline
        body = None if json is None else orjson.dumps(json)
        failures = throttled = 0
        reauthorized = False
        while True:
            token, status, payload, retry_after, failure, elapsed = await self._attempt(
                endpoint, method, url, body, params, priority)
            if 200 <= status < 300:
                try:
                    result = parser(payload, endpoint)
                except ProtocolError:
                    self._observe(endpoint, "protocol_error", elapsed)
                    raise
                self._observe(endpoint, "ok", elapsed)
                return result
            if status == 429:
                self._observe(endpoint, "rate_limited", elapsed)
                self._pause(endpoint, retry_after, throttled, give_up_at)
                throttled += 1
                continue  # the budget holds this and every other request until the pause ends
            if status == 401:
                self._observe(endpoint, "unauthorized", elapsed)
                if not reauthorized:
                    reauthorized = True
                    await self._tokens.invalidate(token)
                    continue
                raise UnauthorizedError(
                    _message("unauthorized even after a token refresh", payload),
                    endpoint=endpoint, status=status)
            if failure is None and status < 500:
                self._observe(endpoint, "client_error", elapsed)
                error_type = _CLIENT_ERRORS.get(status, ClientError)
                raise error_type(_message("request rejected", payload), endpoint=endpoint,
                                 status=status)
            if failure is None:
                self._observe(endpoint, "server_error", elapsed)
                failure = ServerError(_message("server error", payload),
                                      endpoint=endpoint, status=status)
            else:
                self._observe(endpoint, "transport_error", elapsed)
            failures += 1
            delay = self._jitter(failures - 1)
            if failures >= self._max_attempts or loop.time() + delay > give_up_at:
                raise failure
            log.info("%s: %s, retry %d/%d in %.2fs", endpoint, failure,
                     failures, self._max_attempts - 1, delay)
            await asyncio.sleep(delay)

    async def _attempt(
        self, endpoint: str, method: str, url: str, body: bytes | None,
        params: Mapping[str, str] | None, priority: Priority,
    ) -> tuple[str, int, bytes, str | None, UpstreamError | None, float]:
        """One try within the concurrency limit and the budget: (token used, status, body,
        Retry-After, transport failure, seconds). A transport failure has status 0."""
        loop = asyncio.get_running_loop()
        checks, slots = self._check_slots if priority == "status" else self._page_slots, self._slots
        if not take_both(checks, slots):  # (the usual case: both free, taken at once)
            await wait_both(checks, slots)
        try:
            # The slots first (waiting can take a window), then the token, fetched fresh; the
            # slot's place is released answered or not (notifier.core.budget).
            asked = loop.time()
            grant, answered = await self._budget.acquire(priority), False
            try:
                if self._observer is not None:
                    self._observer.on_budget(priority, loop.time() - asked)
                token = await self._tokens.access_token()
                started = loop.time()
                try:
                    status, payload, retry_after = await self._send(
                        endpoint, method, url, token, body, params)
                except TransportError as exc:
                    return token, 0, b"", None, exc, loop.time() - started
                except ProtocolError:  # an oversized body: a malformed page, not retried
                    self._observe(endpoint, "protocol_error", loop.time() - started)
                    raise
                answered = True  # its place in the budget frees a window from now
                return token, status, payload, retry_after, None, loop.time() - started
            finally:
                self._budget.release(grant, answered=answered)
        finally:
            slots.give()
            checks.give()

    def _pause(self, endpoint: str, retry_after: str | None, throttled: int,
               give_up_at: float) -> None:
        """A 429 (the ``throttled``-th before it): pause the whole budget for Retry-After (or
        a backoff), or raise RateLimitedError when that outlasts the deadline."""
        wait = parse_retry_after(retry_after, now=datetime.now(UTC))
        if wait is None:
            wait = max(self._backoff_base, self._jitter(throttled))
        if asyncio.get_running_loop().time() + wait > give_up_at:
            raise RateLimitedError(
                f"still rate limited after {throttled + 1} attempts, deadline reached",
                endpoint=endpoint, retry_after=wait)
        log.info("%s: rate limited (429), pausing credential %s for %.1fs",
                 endpoint, self.credential_name, wait)
        self._budget.pause(wait)
        if self._observer is not None:
            self._observer.on_rate_limited(wait)

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        token: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
    ) -> tuple[int, bytes, str | None]:
        pool = self._keepalive
        if (pool is not None and endpoint in KEPT_ALIVE_ENDPOINTS and body is not None
                and not params and url.startswith(pool.origin + "/")):
            return await self._send_kept_alive(pool, endpoint, method, url[len(pool.origin):],
                                               token, body)
        with map_transport_errors(endpoint):
            async with self._session.request(
                method, url, data=body, params=params,
                headers=self._headers(token, body is not None),
                timeout=self._timeout, allow_redirects=False,
            ) as resp:
                payload = await read_capped(resp, self._max_body, endpoint)
                return resp.status, payload, resp.headers.get("Retry-After")

    async def _send_kept_alive(self, pool: KeepAlivePool, endpoint: str, method: str,
                               path: str, token: str, body: bytes
                               ) -> tuple[int, bytes, str | None]:
        head = pool.head(method, path, self._headers(token, True), len(body))
        resp = await pool.request(head, body, endpoint=endpoint,
                                  seconds=self._timeout.total or DEFAULT_TIMEOUT_SECONDS,
                                  max_body=self._max_body)
        return resp.status, resp.body, resp.retry_after

    def _jitter(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap,
                             rand=random.random())

    def _observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        if self._observer is not None:
            self._observer.on_request(endpoint, outcome, seconds)


def _message(what: str, payload: bytes) -> str:
    """``what`` plus the service's own explanation (``detail``), never headers or tokens."""
    detail = parse.error_detail(payload)
    return f"{what}: {detail}" if detail else what
