"""The pure parts of signing in: PKCE, the authorize URL, reading the callback."""

from __future__ import annotations

import string
from urllib.parse import parse_qs, urlsplit

import pytest

from notifier.source.login import (
    LoginError,
    Pkce,
    authorize_url,
    read_callback,
    redirect_uri,
)


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    pkce = Pkce.new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert pkce.challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifiers_are_random_and_of_legal_length() -> None:
    a, b = Pkce.new(), Pkce.new()
    assert a.verifier != b.verifier
    assert 43 <= len(a.verifier) <= 128
    assert set(a.verifier) <= set(string.ascii_letters + string.digits + "-_")


def test_authorize_url_carries_the_flow_parameters() -> None:
    url = authorize_url("https://developer.api.autodesk.com/", client_id="cid",
                        redirect=redirect_uri(8765), scopes=("data:read", "data:search"),
                        state="st", challenge="ch")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://developer.api.autodesk.com/authentication/v2/authorize")
    assert parse_qs(parts.query) == {
        "response_type": ["code"], "client_id": ["cid"],
        "redirect_uri": ["http://127.0.0.1:8765/callback"], "scope": ["data:read data:search"],
        "state": ["st"], "code_challenge": ["ch"], "code_challenge_method": ["S256"],
    }


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"code": "c", "state": "other"}, "state mismatch"),
        ({"code": "c"}, "state mismatch"),
        ({"error": "access_denied", "state": "s"}, "sign-in refused: access_denied"),
        ({"error": "access_denied", "error_description": "The user said no", "state": "s"},
         "sign-in refused: The user said no"),
        ({"state": "s"}, "no authorization code"),
    ],
)
def test_callback_problems(query: dict[str, str], problem: str) -> None:
    with pytest.raises(LoginError, match=problem):
        read_callback(query, "s")


def test_callback_code() -> None:
    assert read_callback({"code": "abc", "state": "s"}, "s") == "abc"
