"""Standard Webhooks signing, checked against the reference ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.sinks.signing import (
    InvalidSecretError,
    parse_secret,
    sign,
    signature_header,
    webhook_headers,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
SECRET_A = "whsec_" + base64.b64encode(KEY_A).decode()
SECRET_B = "whsec_" + base64.b64encode(KEY_B).decode()
# The example from the Standard Webhooks reference test-suite.
REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_TS = 1614265330
REF_BODY = b'{"test": 2432232314}'
REF_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reference_vector_matches() -> None:
    assert sign(parse_secret(REF_SECRET), REF_ID, REF_TS, REF_BODY) == REF_SIG


@pytest.mark.parametrize(
    ("secrets", "verifier_secret"),
    [
        ([SECRET_A], SECRET_A),
        ([SECRET_A, SECRET_B], SECRET_A),  # rotation: the old secret still verifies
        ([SECRET_A, SECRET_B], SECRET_B),  # ... and so does the new one
        ([SECRET_B, SECRET_A], SECRET_A),
    ],
)
def test_reference_library_accepts(secrets: list[str], verifier_secret: str) -> None:
    keys = [parse_secret(s) for s in secrets]
    body = b'{"specversion":"1.0","id":"e-1","data":{"x":"\xc3\xa9"}}'
    headers = webhook_headers(keys, "e-1", time.time(), body)
    assert headers["webhook-id"] == "e-1"
    assert len(headers["webhook-signature"].split(" ")) == len(secrets)
    assert Webhook(verifier_secret).verify(body, headers) == {
        "specversion": "1.0", "id": "e-1", "data": {"x": "é"},
    }


@pytest.mark.parametrize(
    ("tamper", "secret"),
    [
        ("body", SECRET_A),
        ("id", SECRET_A),
        ("timestamp", SECRET_A),
        ("none", SECRET_B),  # a secret the sender does not have
    ],
)
def test_reference_library_rejects_tampering(tamper: str, secret: str) -> None:
    body = b'{"id":"e-2"}'
    now = time.time()
    headers = webhook_headers([parse_secret(SECRET_A)], "e-2", now, body)
    if tamper == "body":
        body = b'{"id":"e-3"}'
    elif tamper == "id":
        headers["webhook-id"] = "e-3"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(now) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_timestamp_is_whole_unix_seconds() -> None:
    headers = webhook_headers([parse_secret(SECRET_A)], "x", 1700000000.987, b"{}")
    assert headers["webhook-timestamp"] == "1700000000"


@pytest.mark.parametrize(
    "bad",
    [
        base64.b64encode(KEY_A).decode(),  # no prefix
        "whsec_",  # empty
        "whsec_not base64!!",
        "whsec_" + base64.b64encode(b"short").decode(),  # 5 bytes: too weak
        "whsec_" + base64.b64encode(bytes(65)).decode(),  # too long
    ],
)
def test_bad_secrets_are_rejected_without_echoing_them(bad: str) -> None:
    with pytest.raises(InvalidSecretError) as info:
        parse_secret(bad)
    tail = bad.removeprefix("whsec_")
    if tail:
        assert tail not in str(info.value)


def test_unpadded_secret_accepted() -> None:
    assert parse_secret(SECRET_A.rstrip("=")).key == KEY_A


def test_key_repr_is_redacted() -> None:
    key = parse_secret(SECRET_A)
    assert "redacted" in repr(key)
    assert base64.b64encode(KEY_A).decode() not in repr(key)
    assert str(KEY_A) not in repr(key)


def test_signature_header_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signature_header([], "x", 1, b"{}")
