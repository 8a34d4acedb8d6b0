"""Standard Webhooks signing: secrets in the ``whsec_`` form and the three ``webhook-*`` headers.

Pure functions, no I/O. A call carries ``webhook-id``, ``webhook-timestamp`` (unix seconds) and
``webhook-signature``: one ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` per
configured secret, space separated, so a receiver can rotate secrets without losing calls.
See https://www.standardwebhooks.com/ (the ``standardwebhooks`` library verifies these headers).

Signature values and keys are secrets: never log them, never put them in error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
# The Standard Webhooks spec asks for keys of 24 to 64 bytes; shorter ones are rejected as weak.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


class InvalidSecretError(ValueError):
    """A webhook secret is not ``whsec_<base64>`` of a usable key (the message never holds it)."""


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A decoded signing key; ``repr`` hides the bytes so it never lands in a log."""

    key: bytes

    def __repr__(self) -> str:
        return "SigningKey(<redacted>)"


def parse_secret(secret: str) -> SigningKey:
    """Decode ``whsec_<base64>`` into its key; raises InvalidSecretError (without the value)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecretError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX):].strip()
    try:
        # Accept unpadded base64 as the reference libraries do.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecretError("a webhook secret must be whsec_ followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidSecretError(
            f"a webhook secret must decode to {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, "
            f"not {len(key)}"
        )
    return SigningKey(key)


def sign(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``{msg_id}.{timestamp}.{body}``."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key.key, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(keys: Sequence[SigningKey], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, in configured order."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


def webhook_headers(
    keys: Sequence[SigningKey], msg_id: str, now: float, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for a call sent at ``now`` (unix seconds)."""
    timestamp = math.floor(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }
