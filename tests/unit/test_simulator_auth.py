"""Refresh-token rotation and access-token expiry in the simulator (no HTTP)."""

from __future__ import annotations

import pytest

from notifier.simulator.auth import AuthState
from notifier.simulator.bodies import ApiError
from notifier.simulator.config import STATIC_TOKEN_USER, Knobs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(grace: bool = True) -> tuple[AuthState, Clock]:
    """Most tests here exercise the opt-in rotation grace; ``grace=False`` is the default."""
    clock = Clock()
    auth = AuthState(Knobs(rotation_grace=grace, access_token_lifetime=60), clock,
                     client_id="cid", client_secret="sec", static_token="static")
    auth.add_refresh_token("r0", user="alice")
    return auth, clock


def bearer(token: str) -> str:
    return f"Bearer {token}"


def error_of(fn, *args) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as err:
        fn(*args)
    body = err.value.body
    return err.value.status, body.get("error") or body.get("errorCode")


def test_retry_before_successor_use_returns_same_pair():
    auth, _ = make()
    first = auth.refresh("cid", "r0")
    assert first["refresh_token"] != "r0"
    assert auth.refresh("cid", "r0") == first
    assert auth.refresh_token_state("r0") == "rotated"
    assert auth.counters.replays == 1


@pytest.mark.parametrize("use", ["access", "refresh"])
def test_first_use_of_successor_spends_old_token(use: str):
    auth, _ = make()
    first = auth.refresh("cid", "r0")
    if use == "access":
        assert auth.authenticate(bearer(first["access_token"])).user == "alice"
    else:
        auth.refresh("cid", first["refresh_token"])
    assert auth.refresh_token_state("r0") == "spent"
    assert error_of(auth.refresh, "cid", "r0") == (400, "invalid_grant")


def test_refresh_tokens_are_single_use_by_default():
    clock = Clock()
    auth = AuthState(Knobs(), clock, client_id="cid", client_secret="sec", static_token=None)
    auth.add_refresh_token("r0", user="alice")
    first = auth.refresh("cid", "r0")
    assert auth.refresh_token_state("r0") == "spent"
    assert error_of(auth.refresh, "cid", "r0") == (400, "invalid_grant")
    assert auth.refresh_token_state(first["refresh_token"]) == "fresh"
    assert auth.refresh("cid", first["refresh_token"])["refresh_token"] not in (
        "r0", first["refresh_token"])


def test_replay_after_access_expiry_gets_fresh_access_token():
    auth, clock = make()
    first = auth.refresh("cid", "r0")
    clock.now += 120
    again = auth.refresh("cid", "r0")
    assert again["refresh_token"] == first["refresh_token"]
    assert again["access_token"] != first["access_token"]
    assert auth.authenticate(bearer(again["access_token"])).user == "alice"


def test_access_token_expires_static_does_not():
    auth, clock = make()
    grant = auth.refresh("cid", "r0")
    assert grant["expires_in"] == 60
    clock.now += 59
    auth.authenticate(bearer(grant["access_token"]))
    clock.now += 2
    assert error_of(auth.authenticate, bearer(grant["access_token"])) == (401, "AUTH-006")
    clock.now += 10**7
    assert auth.authenticate(bearer("static")).user == STATIC_TOKEN_USER


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer nope"])
def test_bad_bearer_is_401(header: str | None):
    auth, _ = make()
    assert error_of(auth.authenticate, header) == (401, "AUTH-006")


def test_refresh_token_expires_and_belongs_to_its_client():
    auth, clock = make()
    auth.clients["other"] = "x"
    assert error_of(auth.refresh, "other", "r0") == (400, "invalid_grant")
    clock.now += 15 * 86400 + 1
    assert error_of(auth.refresh, "cid", "r0") == (400, "invalid_grant")
    assert error_of(auth.check_client, "cid", "wrong") == (401, "invalid_client")


def test_two_legged_tokens_are_marked():
    auth, _ = make()
    grant = auth.client_credentials("cid")
    assert "refresh_token" not in grant
    assert auth.authenticate(bearer(grant["access_token"])).two_legged is True
