"""RelationshipClient against a scripted local HTTP service: requests, retries, errors, budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from notifier.core.budget import RequestBudget
from notifier.errors import (
    BadRequestError,
    ClientError,
    ForbiddenError,
    NotFoundError,
    NotifierError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UpstreamError,
)
from notifier.source import client as client_module
from notifier.source.auth import StaticTokenProvider
from notifier.source.client import RelationshipClient
from notifier.source.http import USER_AGENT, create_session
from notifier.source.keepalive import KeepAlivePool
from tests.unit.test_client_fakes import (
    API_ROOT,
    CONTAINER,
    Drop,
    FakeService,
    Seen,
    json_response,
    rel,
    sync_page,
)

TOKEN = "static-access-token-value"
MakeClient = Callable[..., RelationshipClient]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.rate_limited: list[float] = []
        self.budget: list[str] = []

    def on_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((endpoint, outcome))

    def on_rate_limited(self, retry_after_seconds: float) -> None:
        self.rate_limited.append(retry_after_seconds)

    def on_budget(self, priority: str, waited_seconds: float) -> None:
        assert waited_seconds >= 0
        self.budget.append(priority)


@pytest.fixture
async def service() -> AsyncIterator[FakeService]:
    async with FakeService() as svc:
        yield svc


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(limit=16) as s:
        yield s


@pytest.fixture(params=["aiohttp", "keepalive"])
async def make_client(
    request: pytest.FixtureRequest, service: FakeService, session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[MakeClient]:
    """Clients on aiohttp, or on the lean kept-alive path (source.keepalive) for every endpoint
    it can carry (a JSON body, no query), so each behaviour below is checked on both."""
    pool: KeepAlivePool | None = None
    if request.param == "keepalive":
        pool = KeepAlivePool(service.url, user_agent=USER_AGENT)
        monkeypatch.setattr(client_module, "KEPT_ALIVE_ENDPOINTS", frozenset(
            {"sync", "syncStatus", "intersect", "batch"}))

    def make(**overrides: Any) -> RelationshipClient:
        kwargs: dict[str, Any] = {
            "base_url": service.url,
            "credential_name": "main",
            "tokens": StaticTokenProvider(TOKEN),
            "budget": RequestBudget(6000, burst=100),
            "timeout": 5.0,
            "max_attempts": 3,
            "backoff_base": 0.01,
            "backoff_cap": 0.05,
            "keepalive": pool,
        }
        kwargs.update(overrides)
        return RelationshipClient(session, **kwargs)

    yield make
    if pool is not None:
        await pool.close()


def path(tail: str) -> str:
    return f"{API_ROOT}/{CONTAINER}/{tail}"


# -- request shapes -----------------------------------------------------------------------------


async def test_sync_request_shape_and_region(service: FakeService, make_client: MakeClient) -> None:
    service.api = lambda seen: json_response(sync_page(3, more=True))
    client = make_client(region="EMEA")
    page = await client.sync(CONTAINER)
    assert len(page.current) == 3
    assert page.more_data is True
    assert page.next_sync_token == "next-token"
    await client.sync(CONTAINER, domains=["autodesk-bim360-asset"])
    await client.sync(CONTAINER, "tok-1", domains=["autodesk-bim360-asset"])
    first, filtered, incremental = service.api_calls()
    assert (first.method, first.path) == ("POST", path("relationships:sync"))
    assert first.json() == {}
    assert filtered.json() == {"filters": {"domains": ["autodesk-bim360-asset"]}}
    assert incremental.json() == {"syncToken": "tok-1"}  # filters only without a token
    for seen in (first, filtered, incremental):
        assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.headers["x-ads-region"] == "EMEA"


async def test_no_region_header_unless_configured(
    service: FakeService, make_client: MakeClient
) -> None:
    service.api = lambda seen: json_response(sync_page())
    await make_client().sync(CONTAINER)
    assert "x-ads-region" not in {k.lower() for k in service.api_calls()[0].headers}


async def test_sync_status_sends_an_array(service: FakeService, make_client: MakeClient) -> None:
    service.api = lambda seen: json_response(
        {
            "results": [
                {"syncToken": "a", "referenceId": "r1", "moreData": True, "overwrite": False}
            ],
            "errors": [
                {
                    "type": "BadInput",
                    "title": "bad",
                    "detail": "token is invalid",
                    "syncToken": "b",
                    "referenceId": None,
                }
            ],
        }
    )
    resp = await make_client().sync_status(CONTAINER, [("a", "r1"), ("b", None)])
    (seen,) = service.api_calls()
    assert seen.path == path("relationships:syncStatus")
    assert seen.json() == [{"syncToken": "a", "referenceId": "r1"}, {"syncToken": "b"}]
    assert resp.results[0].more_data is True
    assert resp.errors[0].sync_token == "b"
    assert await make_client().sync_status(CONTAINER, []) == resp.__class__([], [])
    assert len(service.api_calls()) == 1  # nothing to ask, no request


async def test_search_query_parameters(service: FakeService, make_client: MakeClient) -> None:
    service.api = lambda seen: json_response(
        {"page": {"continuationToken": "20", "syncToken": "s"}, "relationships": [rel(1)]}
    )
    page = await make_client().search(
        CONTAINER,
        {"domain": "autodesk-bim360-issue", "type": "issue"},
        continuation_token="10",
        page_limit=20,
    )
    (seen,) = service.api_calls()
    assert (seen.method, seen.path) == ("GET", path("relationships:search"))
    assert seen.query == {
        "domain": "autodesk-bim360-issue",
        "type": "issue",
        "pageLimit": "20",
        "continuationToken": "10",
    }
    assert "Content-Type" not in seen.headers
    assert (page.continuation_token, page.sync_token) == ("20", "s")


async def test_intersect_batch_and_get(service: FakeService, make_client: MakeClient) -> None:
    def answer(seen: Seen) -> web.Response:
        if seen.path.endswith(":intersect"):
            return json_response({"page": {"continuationToken": None}, "relationships": []})
        if seen.path.endswith(":batch"):
            return json_response([rel(i) for i in range(len(seen.json()))])
        return json_response(rel(7))

    service.api = answer
    client = make_client()
    entity = {"domain": "autodesk-bim360-asset", "type": "asset", "id": "a-1"}
    page = await client.intersect(
        CONTAINER, [entity], [{"domain": "autodesk-bim360-issue"}], include_deleted=True
    )
    assert page.continuation_token is None
    found = await client.batch(CONTAINER, [f"id-{i}" for i in range(120)])
    assert len(found) == 120
    one = await client.get(CONTAINER, "00000000-0000-4000-8000-000000000007")
    assert one.id == "00000000-0000-4000-8000-000000000007"
    inter, *batches, get = service.api_calls()
    assert inter.json() == {
        "entities": [entity],
        "withEntities": [{"domain": "autodesk-bim360-issue"}],
    }
    assert inter.query == {"includeDeleted": "true", "pageLimit": "100"}
    assert [len(b.json()) for b in batches] == [50, 50, 20]  # at most 50 ids per call
    assert (get.method, get.path) == (
        "GET",
        path("relationships/00000000-0000-4000-8000-000000000007"),
    )


async def test_argument_limits(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="domains"):
        await client.sync(CONTAINER, domains=[f"d{i}" for i in range(21)])
    with pytest.raises(ValueError, match="page_limit"):
        await client.search(CONTAINER, {}, page_limit=101)
    with pytest.raises(ValueError, match="entities"):
        await client.intersect(CONTAINER, [])


# -- retries ------------------------------------------------------------------------------------


async def test_429_retry_after_pauses_every_request_of_the_credential(
    service: FakeService, make_client: MakeClient
) -> None:
    state: dict[str, float | None] = {"throttled_at": None}

    def answer(seen: Seen) -> web.Response:
        if state["throttled_at"] is None:
            state["throttled_at"] = seen.at
            return json_response(
                {"developerMessage": "Quota limit exceeded."},
                status=429,
                headers={"Retry-After": "1"},
            )
        return json_response(sync_page())

    service.api = answer
    recorder = Recorder()
    budget = RequestBudget(6000, burst=100)
    client = make_client(observer=recorder, budget=budget)
    first = asyncio.create_task(client.sync(CONTAINER))
    await asyncio.sleep(0.1)  # the 429 has arrived and paused the credential
    others = [asyncio.create_task(client.sync(CONTAINER, f"t{i}")) for i in range(5)]
    await asyncio.gather(first, *others)
    throttled_at = state["throttled_at"]
    assert throttled_at is not None
    later = [s.at - throttled_at for s in service.api_calls()[1:]]
    assert len(later) == 6  # the retry and the five others
    assert min(later) >= 0.95  # nobody went out during the pause
    assert recorder.rate_limited == [1.0]
    assert ("sync", "rate_limited") in recorder.requests
    assert budget.stats.pauses == 1
    assert budget.stats.granted == 7  # the retry took a request from the budget too


async def test_429_without_retry_after_backs_off_and_retries(
    service: FakeService, make_client: MakeClient
) -> None:
    statuses = [429, 429]
    service.api = lambda seen: (
        json_response({}, status=statuses.pop(0)) if statuses else json_response(sync_page())
    )
    page = await make_client(backoff_base=0.05).sync(CONTAINER)
    assert page.next_sync_token == "next-token"
    calls = service.api_calls()
    assert len(calls) == 3
    assert calls[1].at - calls[0].at >= 0.045  # at least base


async def test_429_beyond_the_deadline_raises_rate_limited(
    service: FakeService, make_client: MakeClient
) -> None:
    service.api = lambda seen: json_response({}, status=429, headers={"Retry-After": "30"})
    with pytest.raises(RateLimitedError) as info:
        await make_client(deadline=5.0).sync(CONTAINER)
    assert info.value.retriable
    assert info.value.retry_after == 30.0
    assert len(service.api_calls()) == 1


async def test_5xx_is_retried_then_succeeds(service: FakeService, make_client: MakeClient) -> None:
    statuses = [500, 503]
    service.api = lambda seen: (
        json_response({"detail": "boom"}, status=statuses.pop(0))
        if statuses
        else json_response(sync_page())
    )
    recorder = Recorder()
    page = await make_client(observer=recorder).sync(CONTAINER)
    assert page.next_sync_token == "next-token"
    assert len(service.api_calls()) == 3
    assert recorder.requests == [("sync", "server_error")] * 2 + [("sync", "ok")]


async def test_5xx_until_max_attempts_raises_server_error(
    service: FakeService, make_client: MakeClient
) -> None:
    service.api = lambda seen: json_response({"detail": "database unavailable"}, status=502)
    budget = RequestBudget(6000, burst=100)
    with pytest.raises(ServerError) as info:
        await make_client(max_attempts=4, budget=budget).sync(CONTAINER)
    assert len(service.api_calls()) == 4
    assert budget.stats.granted == 4
    assert info.value.retriable
    assert info.value.status == 502
    assert "database unavailable" in str(info.value)


async def test_timeouts_are_retried_and_mapped(
    service: FakeService, make_client: MakeClient
) -> None:
    async def slow(seen: Seen) -> web.Response:
        await asyncio.sleep(1.0)
        return json_response(sync_page())

    service.api = slow
    with pytest.raises(TransportError, match="timed out") as info:
        await make_client(timeout=0.1, max_attempts=2).sync(CONTAINER)
    assert info.value.retriable
    assert info.value.endpoint == "sync"
    assert len(service.api_calls()) == 2


async def test_connection_refused_is_a_transport_error(session: aiohttp.ClientSession) -> None:
    async with FakeService() as gone:
        url = gone.url
    client = RelationshipClient(
        session,
        base_url=url,
        credential_name="main",
        tokens=StaticTokenProvider(TOKEN),
        budget=RequestBudget(6000, burst=100),
        max_attempts=2,
        backoff_base=0.01,
        backoff_cap=0.02,
    )
    with pytest.raises(TransportError) as info:
        await client.sync(CONTAINER)
    assert not isinstance(info.value, aiohttp.ClientError)
    assert "Connect" in str(info.value)


async def test_dropped_connection_is_retried(service: FakeService, make_client: MakeClient) -> None:
    state = {"n": 0}

    async def drop_first(seen: Seen) -> web.StreamResponse:
        state["n"] += 1
        if state["n"] == 1:
            return Drop()  # the server closes the connection without answering
        return json_response(sync_page())

    service.api = drop_first
    recorder = Recorder()
    page = await make_client(observer=recorder).sync(CONTAINER)
    assert page.next_sync_token == "next-token"
    assert state["n"] == 2
    assert recorder.requests == [("sync", "transport_error"), ("sync", "ok")]


# -- errors that are not retried ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ClientError),
        (415, ClientError),
    ],
)
async def test_4xx_fails_at_once_with_the_service_detail(
    service: FakeService, make_client: MakeClient, status: int, error_type: type[ClientError]
) -> None:
    service.api = lambda seen: json_response(
        {
            "type": "BadInput",
            "title": "bad",
            "detail": "The following parameters are invalid: containerId",
        },
        status=status,
    )
    with pytest.raises(error_type) as info:
        await make_client().sync(CONTAINER)
    assert len(service.api_calls()) == 1
    assert info.value.status == status
    assert not info.value.retriable
    assert "containerId" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_401_with_a_static_token_retries_once_then_unauthorized(
    service: FakeService, make_client: MakeClient
) -> None:
    service.api = lambda seen: json_response(
        {"developerMessage": "The token used in the request is invalid", "errorCode": "AUTH-006"},
        status=401,
    )
    recorder = Recorder()
    with pytest.raises(UnauthorizedError) as info:
        await make_client(observer=recorder).sync(CONTAINER)
    assert len(service.api_calls()) == 2
    assert "token used in the request is invalid" in str(info.value)
    assert TOKEN not in str(info.value)
    assert recorder.requests == [("sync", "unauthorized")] * 2


async def test_malformed_success_is_a_protocol_error_not_retried(
    service: FakeService, make_client: MakeClient
) -> None:
    bad = sync_page(4)
    bad["current"]["data"][2]["entities"].append(bad["current"]["data"][2]["entities"][0])
    service.api = lambda seen: json_response(bad)
    recorder = Recorder()
    with pytest.raises(ProtocolError, match=r"current.data\[2\].entities: expected exactly 2"):
        await make_client(observer=recorder).sync(CONTAINER)
    assert len(service.api_calls()) == 1
    assert recorder.requests == [("sync", "protocol_error")]


async def test_non_json_success_is_a_protocol_error(
    service: FakeService, make_client: MakeClient
) -> None:
    service.api = lambda seen: web.Response(text="<html>hello</html>", content_type="text/html")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        await make_client().get(CONTAINER, "x")


async def test_no_aiohttp_exception_leaks_from_a_bad_url(session: aiohttp.ClientSession) -> None:
    client = RelationshipClient(
        session,
        base_url="notaurl://",
        credential_name="main",
        tokens=StaticTokenProvider(TOKEN),
        budget=RequestBudget(6000, burst=100),
        max_attempts=1,
    )
    with pytest.raises(NotifierError) as info:
        await client.sync(CONTAINER)
    assert isinstance(info.value, UpstreamError)
    assert not isinstance(info.value, aiohttp.ClientError)


async def test_concurrency_limit_bounds_requests_in_flight(
    service: FakeService, make_client: MakeClient
) -> None:
    state = {"now": 0, "peak": 0}

    async def slow(seen: Seen) -> web.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return json_response(sync_page())

    service.api = slow
    client = make_client(concurrency=3)
    await asyncio.gather(*(client.sync(CONTAINER, f"t{i}") for i in range(12)))
    assert state["peak"] == 3


# -- response size cap -------------------------------------------------------------------------


async def _endless_json() -> AsyncIterator[bytes]:
    yield b'{"pagination": {"syncToken": "t", "moreData": false}, "results": ["'
    for _ in range(10_000):
        yield b"x" * 1024


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_max_response_bytes_is_a_protocol_error(
    service: FakeService, make_client: MakeClient, chunked: bool
) -> None:
    def big(seen: Seen) -> web.Response:
        if chunked:  # no Content-Length: the cap must hold while reading
            return web.Response(body=_endless_json(), content_type="application/json")
        return web.Response(body=b"[" + b'"x",' * 40_000 + b'"x"]',
                            content_type="application/json")

    service.api = big
    recorder = Recorder()
    client = make_client(max_response_bytes=64 * 1024, observer=recorder)
    with pytest.raises(ProtocolError) as info:
        await client.sync(CONTAINER)
    assert "exceeds the limit of 65536 bytes" in str(info.value)
    assert not info.value.retriable
    assert len(service.api_calls()) == 1  # not retried
    assert recorder.requests == [("sync", "protocol_error")]
    service.api = lambda seen: json_response(sync_page(3))
    assert len((await client.sync(CONTAINER)).current) == 3  # a normal page still fits


async def test_a_page_is_not_kept_out_of_every_slot_by_checks_waiting_for_the_budget(
    service: FakeService, make_client: MakeClient
) -> None:
    """Checks may hold all but one of the slots: with both slots of two held by checks waiting
    for a paused budget, a sync page found no slot to wait in, and the budget (which grants
    pages first) granted the checks before it."""
    order: list[str] = []

    def record(seen: Seen) -> web.Response:
        order.append(seen.json().get("syncToken", "?"))
        return json_response(sync_page())

    service.api = record
    budget = RequestBudget(6000, burst=1)
    client = make_client(concurrency=2, budget=budget)
    budget.pause(0.3)
    checks = [asyncio.create_task(client.sync(CONTAINER, f"check-{i}", priority="status"))
              for i in range(2)]
    await asyncio.sleep(0.05)  # both checks have asked for their slots
    page = asyncio.create_task(client.sync(CONTAINER, "page"))
    await asyncio.gather(*checks, page)
    assert order[0] == "page", order
    assert sorted(order[1:]) == ["check-0", "check-1"]
