"""OAuth refresh and rotation against a scripted local token endpoint (and API, for 401s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from notifier.core.budget import RequestBudget
from notifier.errors import CredentialError, InvalidGrantError, UnauthorizedError
from notifier.source.auth import (
    CredentialUnavailableError,
    InMemoryRefreshTokenStore,
    RefreshingTokenProvider,
    default_token_url,
    seed_fingerprint,
)
from notifier.source.client import RelationshipClient
from notifier.source.http import create_session
from tests.unit.test_client_fakes import (
    CONTAINER,
    TOKEN_PATH,
    FakeService,
    TokenServer,
    basic_credentials,
    json_response,
    sync_page,
)

SEED = "seed-rt"
SECRET = "csecret"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_refresh(self, credential: str, outcome: str) -> None:
        self.seen.append((credential, outcome))


class SecretStrLike:
    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "**********"


@pytest.fixture
async def service() -> AsyncIterator[FakeService]:
    async with FakeService() as svc:
        yield svc


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(limit=16) as s:
        yield s


def provider(
    service: FakeService, session: aiohttp.ClientSession, store: Any = None, **kw: Any
) -> RefreshingTokenProvider:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.02)
    return RefreshingTokenProvider(
        "main",
        session,
        default_token_url(service.url),
        "cid",
        SecretStrLike(SECRET),
        SEED,
        store if store is not None else InMemoryRefreshTokenStore(),
        **kw,
    )


def client(
    service: FakeService, session: aiohttp.ClientSession, tokens: RefreshingTokenProvider
) -> RelationshipClient:
    return RelationshipClient(
        session,
        base_url=service.url,
        credential_name="main",
        tokens=tokens,
        budget=RequestBudget(6000, burst=100),
        max_attempts=2,
        backoff_base=0.01,
        backoff_cap=0.02,
    )


async def test_refresh_request_uses_basic_auth_and_a_form_body(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    store = InMemoryRefreshTokenStore()
    tokens = provider(service, session, store)
    assert await tokens.access_token() == "at-1"
    (seen,) = service.token_calls()
    assert seen.method == "POST"
    assert seen.path == TOKEN_PATH
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert basic_credentials(seen) == ("cid", SECRET)
    assert seen.form == {"grant_type": "refresh_token", "refresh_token": SEED}
    assert b"cid" not in seen.body
    assert SECRET.encode() not in seen.body
    assert store.tokens == {("main", seed_fingerprint(SEED)): "rt-1"}
    assert await tokens.access_token() == "at-1"  # cached: no second refresh
    assert len(service.token_calls()) == 1


async def test_concurrent_callers_with_an_expired_token_cause_one_refresh(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.delay = 0.1
    service.token = server
    clock = FakeClock()
    tokens = provider(service, session, clock=clock)
    got = await asyncio.gather(*(tokens.access_token() for _ in range(20)))
    assert set(got) == {"at-1"}
    clock.now += 3600  # expired
    got = await asyncio.gather(*(tokens.access_token() for _ in range(20)))
    assert set(got) == {"at-2"}
    assert len(service.token_calls()) == 2


async def test_renewal_happens_shortly_before_expiry(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer(expires_in=3599)
    clock = FakeClock()
    tokens = provider(service, session, clock=clock, refresh_margin=300)
    assert await tokens.access_token() == "at-1"
    clock.now += 3599 - 301
    assert await tokens.access_token() == "at-1"
    clock.now += 2  # inside the margin
    assert await tokens.access_token() == "at-2"


async def test_short_lived_tokens_are_not_refreshed_on_every_call(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer(expires_in=10)  # shorter than the 300 s margin
    clock = FakeClock()
    tokens = provider(service, session, clock=clock)
    assert await tokens.access_token() == "at-1"
    clock.now += 4
    assert await tokens.access_token() == "at-1"
    clock.now += 2
    assert await tokens.access_token() == "at-2"


async def test_stored_rotated_token_wins_unless_the_seed_changed(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.valid = {"stored-rt", "new-seed"}
    service.token = server
    store = InMemoryRefreshTokenStore()
    await store.save_refresh_token("main", seed_fingerprint(SEED), "stored-rt")
    await provider(service, session, store).access_token()
    assert service.token_calls()[-1].form["refresh_token"] == "stored-rt"
    reseeded = RefreshingTokenProvider(
        "main",
        session,
        default_token_url(service.url),
        "cid",
        SECRET,
        "new-seed",
        store,
        backoff_base=0.01,
    )
    await reseeded.access_token()
    assert service.token_calls()[-1].form["refresh_token"] == "new-seed"
    assert store.tokens[("main", seed_fingerprint("new-seed"))] == "rt-2"


async def test_401_invalidates_and_refreshes_once_then_retries(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    rejected = {"at-1"}
    service.api = lambda seen: (
        json_response({"developerMessage": "expired", "errorCode": "AUTH-006"}, status=401)
        if seen.bearer in rejected
        else json_response(sync_page())
    )
    tokens = provider(service, session)
    api = client(service, session, tokens)
    page = await api.sync(CONTAINER)
    assert page.next_sync_token == "next-token"
    assert [c.bearer for c in service.api_calls()] == ["at-1", "at-2"]
    assert len(service.token_calls()) == 2
    rejected.add("at-2")
    rejected.add("at-3")
    with pytest.raises(UnauthorizedError):
        await api.sync(CONTAINER)
    assert len(service.token_calls()) == 3  # one refresh per call, not a loop


async def test_concurrent_401s_share_one_refresh(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    service.api = lambda seen: (
        json_response({}, status=401) if seen.bearer == "at-1" else json_response(sync_page())
    )
    tokens = provider(service, session)
    await tokens.access_token()
    api = client(service, session, tokens)
    await asyncio.gather(*(api.sync(CONTAINER, f"t{i}") for i in range(10)))
    assert len(service.token_calls()) == 2  # the first token, then exactly one refresh


class OrderedStore(InMemoryRefreshTokenStore):
    """Checks, at save time, that the service has not yet seen the new access token."""

    def __init__(self, service: FakeService) -> None:
        super().__init__()
        self.service = service
        self.used_before_save: list[str] = []
        self.fail = False

    async def save_refresh_token(self, credential: str, fp: str, refresh_token: str) -> None:
        access = "at-" + refresh_token.removeprefix("rt-")
        if any(c.bearer == access for c in self.service.api_calls()):
            self.used_before_save.append(access)
        await asyncio.sleep(0.05)  # a slow fsync: nobody may use the token meanwhile
        if self.fail:
            raise OSError("disk full")
        await super().save_refresh_token(credential, fp, refresh_token)


async def test_rotated_token_is_saved_before_the_access_token_is_used(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    service.api = lambda seen: json_response(sync_page())
    store = OrderedStore(service)
    clock = FakeClock()
    tokens = provider(service, session, store, clock=clock)
    api = client(service, session, tokens)
    await asyncio.gather(*(api.sync(CONTAINER, f"t{i}") for i in range(5)))
    clock.now += 3600
    await asyncio.gather(*(api.sync(CONTAINER, f"t{i}") for i in range(5)))
    assert store.saves == 2
    assert store.used_before_save == []
    assert {c.bearer for c in service.api_calls()} == {"at-1", "at-2"}


async def test_store_failure_means_the_new_access_token_is_never_used(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    service.token = server
    service.api = lambda seen: json_response(sync_page())
    store = OrderedStore(service)
    store.fail = True
    outcomes = Outcomes()
    tokens = provider(service, session, store, observer=outcomes)
    api = client(service, session, tokens)
    with pytest.raises(CredentialError, match="could not be stored") as info:
        await api.sync(CONTAINER)
    assert info.value.credential == "main"
    assert service.api_calls() == []  # at-1 never went out
    assert ("main", "store_failed") in outcomes.seen
    # The store recovers: the next refresh uses the rotated token kept in memory (rt-1; the
    # seed is spent), saves rt-2 and only then uses at-2.
    store.fail = False
    await api.sync(CONTAINER)
    assert service.token_calls()[-1].form["refresh_token"] == "rt-1"
    assert store.tokens == {("main", seed_fingerprint(SEED)): "rt-2"}
    assert [c.bearer for c in service.api_calls()] == ["at-2"]


async def test_a_cancelled_caller_does_not_interrupt_rotation(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.delay = 0.1
    service.token = server
    store = InMemoryRefreshTokenStore()
    tokens = provider(service, session, store)
    caller = asyncio.create_task(tokens.access_token())
    await asyncio.sleep(0.02)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0.2)
    assert store.tokens == {("main", seed_fingerprint(SEED)): "rt-1"}
    assert await tokens.access_token() == "at-1"
    assert len(service.token_calls()) == 1


async def test_invalid_grant_names_the_credential_and_leaks_no_secret(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.valid = set()  # the seed is spent
    service.token = server
    outcomes = Outcomes()
    tokens = provider(service, session, observer=outcomes)
    with pytest.raises(InvalidGrantError) as info:
        await tokens.access_token()
    message = str(info.value)
    assert "'main'" in message
    assert "refresh token" in message
    assert "re-seed" in message.lower()
    assert info.value.credential == "main"
    assert not info.value.retriable
    for secret in (SEED, SECRET):
        assert secret not in message
        assert secret not in repr(tokens)
    assert outcomes.seen == [("main", "invalid_grant")]
    with pytest.raises(InvalidGrantError):  # fails fast afterwards: no hammering of the endpoint
        await tokens.access_token()
    assert len(service.token_calls()) == 1


async def test_token_endpoint_5xx_is_retried_then_succeeds(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.fail_next = [503, 500]
    service.token = server
    assert await provider(service, session).access_token() == "at-1"
    assert len(service.token_calls()) == 3


async def test_token_endpoint_down_gives_a_retriable_credential_error(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    server.fail_next = [502] * 10
    service.token = server
    outcomes = Outcomes()
    with pytest.raises(CredentialUnavailableError) as info:
        await provider(service, session, max_attempts=3, observer=outcomes).access_token()
    assert isinstance(info.value, CredentialError)
    assert info.value.retriable
    assert len(service.token_calls()) == 3
    assert outcomes.seen == [("main", "unavailable")]


async def test_wrong_client_secret_is_not_retried(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer(client=("cid", "other"))
    with pytest.raises(CredentialError, match="client id/secret rejected") as info:
        await provider(service, session).access_token()
    assert not info.value.retriable
    assert SECRET not in str(info.value)
    assert len(service.token_calls()) == 1


async def test_failed_early_renewal_keeps_using_the_current_token(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    service.token = server
    clock = FakeClock()
    tokens = provider(service, session, clock=clock, max_attempts=1)
    assert await tokens.access_token() == "at-1"
    clock.now += 3599 - 200  # inside the renewal margin, still valid
    server.fail_next = [503]
    assert await tokens.access_token() == "at-1"
    clock.now += 200  # expired now: a failure must surface
    server.fail_next = [503]
    with pytest.raises(CredentialUnavailableError):
        await tokens.access_token()


async def test_invalidate_of_an_old_token_after_a_refresh_is_a_no_op(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    clock = FakeClock()
    tokens = provider(service, session, clock=clock)
    assert await tokens.access_token() == "at-1"
    clock.now += 3600
    assert await tokens.access_token() == "at-2"
    await tokens.invalidate("at-1")  # a late 401 for the old token
    assert await tokens.access_token() == "at-2"
    await tokens.invalidate("at-2")
    assert await tokens.access_token() == "at-3"
    assert len(service.token_calls()) == 3


def test_seed_fingerprint_is_sha256_hex() -> None:
    assert seed_fingerprint("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


async def test_invalid_grant_rereads_the_store_once_for_a_token_rotated_elsewhere(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    service.token = TokenServer()
    store = InMemoryRefreshTokenStore()
    clock = FakeClock()
    first = provider(service, session, store, clock=clock)
    assert await first.access_token() == "at-1"  # seed -> rt-1, stored
    second = provider(service, session, store, clock=clock)
    assert await second.access_token() == "at-2"  # loads rt-1 from the store -> rt-2
    clock.now += 3600  # `first` must renew, still holding the spent rt-1 in memory
    outcomes = Outcomes()
    first._observer = outcomes
    assert await first.access_token() == "at-3"
    sent = [c.form["refresh_token"] for c in service.token_calls()]
    assert sent == [SEED, "rt-1", "rt-1", "rt-2"]
    assert store.tokens == {("main", seed_fingerprint(SEED)): "rt-3"}
    assert outcomes.seen == [("main", "ok")]


async def test_invalid_grant_with_nothing_newer_stored_is_final_after_one_reread(
    service: FakeService, session: aiohttp.ClientSession
) -> None:
    server = TokenServer()
    service.token = server
    store = InMemoryRefreshTokenStore()
    clock = FakeClock()
    tokens = provider(service, session, store, clock=clock)
    assert await tokens.access_token() == "at-1"
    server.valid = set()  # revoked: the stored rt-1 is no better
    clock.now += 3600
    with pytest.raises(InvalidGrantError):
        await tokens.access_token()
    assert [c.form["refresh_token"] for c in service.token_calls()] == [SEED, "rt-1"]
    with pytest.raises(InvalidGrantError):
        await tokens.access_token()
    assert len(service.token_calls()) == 2
