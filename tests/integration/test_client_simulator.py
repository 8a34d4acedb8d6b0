"""RelationshipClient and RefreshingTokenProvider against the simulator, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from notifier.core.budget import RequestBudget
from notifier.errors import BadRequestError, CredentialError, InvalidGrantError
from notifier.simulator import Knobs, Simulator, SimulatorConfig
from notifier.simulator.config import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from notifier.simulator.limits import SlidingWindowLimiter
from notifier.source.auth import (
    InMemoryRefreshTokenStore,
    RefreshingTokenProvider,
    StaticTokenProvider,
    TokenProvider,
    default_token_url,
    seed_fingerprint,
)
from notifier.source.client import RelationshipClient
from notifier.source.http import create_session
from notifier.source.models import SyncPage

CID = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
OTHER = "0b7f6a55-9d3c-4e21-8f0a-6c2d1e3b4a59"


def config(relationships: int = 250, **knobs: Any) -> SimulatorConfig:
    knobs.setdefault("rpm", 0)  # unlimited unless a test is about the rate limit
    return SimulatorConfig(
        containers=[CID, OTHER], relationships=relationships, seed=7, knobs=Knobs(**knobs)
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(limit=32) as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(config()) as s:
        yield s


def make_client(
    sim: Simulator, session: aiohttp.ClientSession, tokens: TokenProvider | None = None, **kw: Any
) -> RelationshipClient:
    kw.setdefault("budget", RequestBudget(6000, burst=200))
    kw.setdefault("max_attempts", 4)
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("backoff_cap", 0.2)
    return RelationshipClient(
        session,
        base_url=sim.url,
        credential_name="main",
        tokens=tokens or StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
        **kw,
    )


def refreshing(
    sim: Simulator,
    session: aiohttp.ClientSession,
    store: Any,
    seed: str = DEFAULT_REFRESH_TOKEN,
    **kw: Any,
) -> RefreshingTokenProvider:
    return RefreshingTokenProvider(
        "main",
        session,
        default_token_url(sim.url),
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        seed,
        store,
        backoff_base=0.02,
        backoff_cap=0.1,
        **kw,
    )


async def drain(
    client: RelationshipClient, token: str | None = None, container: str = CID
) -> tuple[list[SyncPage], str]:
    """Sync until moreData is false; the pages and the token to store."""
    pages: list[SyncPage] = []
    while True:
        page = await client.sync(container, token)
        pages.append(page)
        token = page.next_sync_token
        if not page.more_data:
            return pages, token


def live_ids(sim: Simulator, container: str = CID) -> set[str]:
    return set(sim.state.ground_truth(container)["live"])


async def test_bootstrap_then_incremental_sync_across_pages(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(sim, session, region="EMEA")
    pages, token = await drain(client)
    assert len(pages) == 3  # 250 relationships, 100 per page
    assert [p.more_data for p in pages] == [True, True, False]
    seen = [r.id for p in pages for r in p.current]
    assert len(seen) == len(set(seen)) == 250
    assert set(seen) == live_ids(sim)
    assert all(p.deleted == [] and not p.overwrite for p in pages)

    created = sim.state.create_relationships(CID, 150)
    deleted = sim.state.delete_relationships(CID, seen[:60])
    pages, token2 = await drain(client, token)
    assert len(pages) >= 3  # 210 changes, at most 100 items per page
    assert {r.id for p in pages for r in p.current} == set(created)
    gone = [r for p in pages for r in p.deleted]
    assert {r.id for r in gone} == set(deleted)
    assert all(r.is_deleted and r.deleted_on for r in gone)
    assert gone[0].raw["entities"][0]["domain"]  # raw is the dict as sent

    pages, _ = await drain(client, token2)  # caught up: nothing more
    assert pages[0].current == []
    assert pages[0].deleted == []
    assert not pages[0].more_data
    assert sim.state.stats.regions["EMEA"] == sum(sim.state.stats.requests.values()) == 7


async def test_sync_status_batches_many_tokens_in_one_call(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(sim, session)
    _, old = await drain(client)
    sim.state.create_relationships(CID, 3)
    _, new = await drain(client)
    items = [(old, f"old-{i}") for i in range(150)] + [(new, f"new-{i}") for i in range(150)]
    before = sim.state.stats.requests["syncStatus"]
    status = await client.sync_status(CID, items)
    assert sim.state.stats.requests["syncStatus"] == before + 1
    assert status.errors == []
    assert len(status.results) == 300
    by_ref = {r.reference_id: r for r in status.results}
    assert all(by_ref[f"old-{i}"].more_data for i in range(150))
    assert not any(by_ref[f"new-{i}"].more_data for i in range(150))
    assert not any(r.overwrite for r in status.results)


async def test_a_bad_token_is_reported_in_errors(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(sim, session)
    _, good = await drain(client)
    _, foreign = await drain(client, container=OTHER)
    status = await client.sync_status(
        CID, [(good, "ok"), ("not-a-token", "garbled"), (foreign, "other-container")]
    )
    assert [r.reference_id for r in status.results] == ["ok"]
    failures = {f.reference_id: f for f in status.errors}
    assert set(failures) == {"garbled", "other-container"}
    assert failures["garbled"].sync_token == "not-a-token"
    assert failures["garbled"].type == "BadInput"
    assert "another container" in failures["other-container"].detail
    with pytest.raises(BadRequestError, match="sync token is not valid"):
        await client.sync(CID, "not-a-token")


async def test_overwrite_after_the_retention_horizon_moves(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = make_client(sim, session)
    _, token = await drain(client)
    sim.state.create_relationships(CID, 20)
    sim.state.delete_random(CID, 30)
    sim.state.move_retention_horizon(CID)
    (status,) = (await client.sync_status(CID, [(token, "s")])).results
    assert status.overwrite
    assert status.more_data
    pages, fresh = await drain(client, token)
    assert all(p.overwrite for p in pages)
    assert {r.id for p in pages for r in p.current} == live_ids(sim)
    assert all(p.deleted == [] for p in pages)
    (after,) = (await client.sync_status(CID, [(fresh, "s")])).results
    assert not after.overwrite
    assert not after.more_data


async def test_429_storm_stays_within_the_budget_and_completes(
    session: aiohttp.ClientSession,
) -> None:
    # A 2 s window instead of 60 s keeps the test short; the arithmetic is the same.
    async with Simulator(config(relationships=5, rpm=10)) as sim:
        sim.state.limiter = SlidingWindowLimiter(window=2.0)
        budget = RequestBudget(20, burst=5, window=2.0)  # twice what the server allows
        attempts: list[float] = []
        loop = asyncio.get_running_loop()

        class Observe:
            def on_request(self, endpoint: str, outcome: str, seconds: float) -> None:
                attempts.append(loop.time() - seconds)

            def on_rate_limited(self, retry_after_seconds: float) -> None:
                pass

            def on_budget(self, priority: str, waited_seconds: float) -> None:
                pass

        client = make_client(sim, session, budget=budget, observer=Observe(), concurrency=6)
        _, token = await drain(client)
        results = await asyncio.gather(
            *(client.sync_status(CID, [(token, str(i))]) for i in range(40))
        )
        assert all(r.results[0].reference_id == str(i) for i, r in enumerate(results))
        assert sim.state.stats.rate_limited > 0  # it was a storm
        assert budget.stats.pauses > 0
        total = sum(sim.state.stats.requests.values())
        assert budget.stats.granted == total == len(attempts)  # retries took budget too
        attempts.sort()
        for i, start in enumerate(attempts):  # never more than 20 in any 2 s window
            assert sum(1 for t in attempts[i:] if t < start + 2.0 - 0.05) <= 20


async def test_a_budget_under_the_server_limit_gets_no_429(session: aiohttp.ClientSession) -> None:
    async with Simulator(config(relationships=5, rpm=10)) as sim:
        sim.state.limiter = SlidingWindowLimiter(window=2.0)
        # 8 per 2.5 s against the server's 10 per 2 s: room for the scheduling jitter of a
        # loaded machine (client and server share one event loop here).
        budget = RequestBudget(8, burst=3, window=2.5)
        client = make_client(sim, session, budget=budget, concurrency=8)
        _, token = await drain(client)
        await asyncio.gather(*(client.sync_status(CID, [(token, None)]) for i in range(24)))
        assert sim.state.stats.rate_limited == 0
        assert max(sim.state.limiter.peak.values()) <= 8


async def test_injected_5xx_are_retried(session: aiohttp.ClientSession) -> None:
    async with Simulator(config(fail_rate=0.5)) as sim:  # seeded: the same faults each run
        client = make_client(sim, session, max_attempts=10)
        pages, _ = await drain(client)
        assert {r.id for p in pages for r in p.current} == live_ids(sim)
        found = await client.batch(CID, sorted(live_ids(sim))[:120])
        assert len(found) == 120
        assert sim.state.stats.faults_injected > 0


async def test_search_intersect_get(sim: Simulator, session: aiohttp.ClientSession) -> None:
    client = make_client(sim, session)
    rid = sorted(live_ids(sim))[0]
    one = await client.get(CID, rid)
    entity = {k: one.raw["entities"][0][k] for k in ("domain", "type", "id")}
    page = await client.search(CID, {k: entity[k] for k in ("domain", "type", "id")})
    assert rid in {r.id for r in page.relationships}
    assert page.sync_token
    inter = await client.intersect(CID, [entity])
    assert rid in {r.id for r in inter.relationships}


async def test_expired_access_token_is_refreshed_once(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    store = InMemoryRefreshTokenStore()
    tokens = refreshing(sim, session, store)
    client = make_client(sim, session, tokens)
    await client.sync_status(CID, [])  # nothing to ask: no token needed yet
    await drain(client)
    assert sim.state.auth.counters.refreshes == 1
    sim.state.expire_access_tokens()
    await asyncio.gather(*(client.sync(CID) for _ in range(5)))  # 401s, one refresh, retries
    assert sim.state.auth.counters.refreshes == 2
    assert sim.state.stats.unauthorized >= 1


async def test_short_lived_access_tokens_are_renewed_before_expiry(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(config(access_token_lifetime=1.0)) as sim:
        tokens = refreshing(sim, session, InMemoryRefreshTokenStore())
        client = make_client(sim, session, tokens)
        await client.sync(CID)
        await asyncio.sleep(1.1)
        await client.sync(CID)
        assert sim.state.auth.counters.refreshes == 2
        assert sim.state.stats.unauthorized == 0  # renewed ahead, never rejected


class CrashingStore(InMemoryRefreshTokenStore):
    """The process "dies" (the save never happens) between the refresh and persistence."""

    async def save_refresh_token(self, credential: str, fp: str, refresh_token: str) -> None:
        raise OSError("killed before fsync")


async def test_crash_between_refresh_and_persistence_then_restart(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    # Recovery with the old token needs the service's grace (opt-in: the real service
    # promises none; without it the credential must be re-seeded, tested below).
    sim.state.set_knobs(rotation_grace=True)
    durable = InMemoryRefreshTokenStore()  # what survives the crash: nothing was saved
    crashing = refreshing(sim, session, CrashingStore())
    with pytest.raises(CredentialError, match="could not be stored"):
        await make_client(sim, session, crashing).sync(CID)
    assert sim.state.stats.requests["sync"] == 0  # the new access token was never used
    # Restart: the seed (the last durable token) still works, and the rotation completes.
    restarted = refreshing(sim, session, durable)
    pages, _ = await drain(make_client(sim, session, restarted))
    assert pages
    assert sim.state.auth.counters.replays == 1
    stored = durable.tokens[("main", seed_fingerprint(DEFAULT_REFRESH_TOKEN))]
    assert sim.state.auth.refresh_token_state(DEFAULT_REFRESH_TOKEN) == "spent"
    assert sim.state.auth.refresh_token_state(stored) in {"fresh", "rotated"}
    # And a second restart continues from the stored, rotated token.
    again = refreshing(sim, session, durable)
    await make_client(sim, session, again).sync(CID)
    assert durable.tokens[("main", seed_fingerprint(DEFAULT_REFRESH_TOKEN))] != stored


async def test_spent_refresh_token_gives_an_actionable_invalid_grant(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(config()) as sim:  # single-use refresh tokens (the default)
        await refreshing(sim, session, InMemoryRefreshTokenStore()).access_token()
        stale = refreshing(sim, session, InMemoryRefreshTokenStore())  # seed is spent now
        with pytest.raises(InvalidGrantError) as info:
            await make_client(sim, session, stale).sync(CID)
        message = str(info.value)
        assert "'main'" in message
        assert "re-seed" in message.lower()
        for secret in (DEFAULT_REFRESH_TOKEN, DEFAULT_CLIENT_SECRET):
            assert secret not in message
