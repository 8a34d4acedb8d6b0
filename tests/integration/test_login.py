"""Signing in end to end against the simulator's authorize and token endpoints: a browser is
played by an HTTP client that follows the authorize URL's redirect to the callback listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from notifier.simulator import Simulator, SimulatorConfig
from notifier.simulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from notifier.source.auth import basic_authorization
from notifier.source.login import (
    LoginError,
    Pkce,
    authorize_url,
    exchange_code,
    redirect_uri,
    sign_in,
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(containers=["0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"],
                                         relationships=1)) as s:
        yield s


def token_url(sim: Simulator) -> str:
    return f"{sim.url}/authentication/v2/token"


async def test_sign_in_yields_a_working_refresh_token(sim: Simulator) -> None:
    shown: list[tuple[str, str]] = []
    browser_done: list[int] = []

    async with aiohttp.ClientSession() as session:
        def show(url: str, redirect: str) -> None:
            shown.append((url, redirect))

            async def browse() -> None:  # the user's browser: authorize, then the redirect
                async with session.get(url) as resp:
                    browser_done.append(resp.status)

            asyncio.get_running_loop().create_task(browse())

        grant = await sign_in(session, base_url=sim.url, token_url=token_url(sim),
                              client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                              port=0, wait=20, show=show)
        (url, redirect), = shown
        query = parse_qs(urlsplit(url).query)
        assert query["redirect_uri"] == [redirect]
        assert query["scope"] == ["data:read"]
        assert query["code_challenge_method"] == ["S256"]
        assert redirect.startswith("http://127.0.0.1:")
        assert redirect.endswith("/callback")
        assert sim.state.auth.refresh_token_state(grant.refresh_token) == "fresh"
        assert grant.expires_in > 0
        # The refresh token works as a seed: a refresh grant rotates it.
        async with session.post(token_url(sim), data={"grant_type": "refresh_token",
                                                       "refresh_token": grant.refresh_token},
                                headers={"Authorization": basic_authorization(
                                    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)}) as resp:
            assert resp.status == 200
            assert (await resp.json())["refresh_token"] != grant.refresh_token
    assert browser_done == [200]  # the listener's "signed in" page
    assert sim.state.auth.counters.codes_exchanged == 1


async def _code(session: aiohttp.ClientSession, sim: Simulator, pkce: Pkce,
                redirect: str) -> str:
    url = authorize_url(sim.url, client_id=DEFAULT_CLIENT_ID, redirect=redirect,
                        scopes=("data:read",), state="s1", challenge=pkce.challenge)
    async with session.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith(redirect + "?")
    answer = parse_qs(urlsplit(location).query)
    assert answer["state"] == ["s1"]
    return answer["code"][0]


async def test_a_code_needs_its_verifier_and_works_once(sim: Simulator) -> None:
    redirect = redirect_uri(9)  # nothing listens: the test reads the redirect itself
    async with aiohttp.ClientSession() as session:
        pkce = Pkce.new()
        code = await _code(session, sim, pkce, redirect)
        with pytest.raises(LoginError, match="invalid_grant"):
            await exchange_code(session, token_url(sim), client_id=DEFAULT_CLIENT_ID,
                                client_secret=DEFAULT_CLIENT_SECRET, code=code,
                                redirect=redirect, verifier=Pkce.new().verifier)
        with pytest.raises(LoginError, match="invalid_grant"):  # spent by the failed attempt
            await exchange_code(session, token_url(sim), client_id=DEFAULT_CLIENT_ID,
                                client_secret=DEFAULT_CLIENT_SECRET, code=code,
                                redirect=redirect, verifier=pkce.verifier)
        code = await _code(session, sim, pkce, redirect)
        with pytest.raises(LoginError, match="HTTP 401, invalid_client"):
            await exchange_code(session, token_url(sim), client_id=DEFAULT_CLIENT_ID,
                                client_secret="wrong", code=code, redirect=redirect,
                                verifier=pkce.verifier)
        code = await _code(session, sim, pkce, redirect)
        grant = await exchange_code(session, token_url(sim), client_id=DEFAULT_CLIENT_ID,
                                    client_secret=DEFAULT_CLIENT_SECRET, code=code,
                                    redirect=redirect, verifier=pkce.verifier)
        assert sim.state.auth.refresh_token_state(grant.refresh_token) == "fresh"


async def test_refused_scope_reaches_the_callback_as_an_error(sim: Simulator) -> None:
    redirect = redirect_uri(9)
    url = authorize_url(sim.url, client_id=DEFAULT_CLIENT_ID, redirect=redirect,
                        scopes=("data:everything",), state="s2", challenge="c")
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            answer = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert answer["error"] == ["invalid_scope"]
        assert answer["state"] == ["s2"]
        bad_client = url.replace(DEFAULT_CLIENT_ID, "nobody")
        async with session.get(bad_client, allow_redirects=False) as resp:
            assert resp.status == 400  # never redirected for an unknown client


async def test_no_sign_in_in_time_is_a_clear_error(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(LoginError, match="no sign-in within 1 s"):
            await sign_in(session, base_url=sim.url, token_url=token_url(sim),
                          client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                          port=0, wait=1, show=lambda url, redirect: None)
