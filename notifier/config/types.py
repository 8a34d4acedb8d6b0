"""Field types of the config file: names, ids, URLs, host:port and secrets.

A secret field can also be given as ``<field>_file: path``: the model turns that key into a
``FromFile`` placeholder (see ``base.ConfigModel``) and the field's validator here reads the file.
Validation messages never carry the input value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from notifier.durations import Duration

# --- field types --------------------------------------------------------------------------------


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
_NAME = re.compile(NAME_PATTERN)  # compiled once: a large config checks 100,000s of names


_VALID_NAMES: dict[str, str] = {}  # the first names found valid, interned: the repeated ones
_VALID_NAMES_MAX = 1024


def _check_name(value: str) -> str:
    known = _VALID_NAMES.get(value)  # 100,000 subscriptions name the same few credentials
    if known is not None:  # and sinks: checked once
        return known
    if not _NAME.match(value):
        raise _fail("name", "must be 1-128 characters: letters, digits, '.', '_' or '-'")
    # Interned: one string serves every subscription that names it, and the store's rows
    # share the subscription names (state.sqlite_streams).
    value = sys.intern(value)
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES[value] = value
    return value


Name = Annotated[
    str, AfterValidator(_check_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
NonEmpty = Annotated[str, Field(min_length=1)]
EntityPart = Annotated[str, Field(min_length=1, max_length=128)]
EntityId = Annotated[str, Field(min_length=1, max_length=512)]
PositiveDuration = Annotated[Duration, Field(gt=0)]

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_GUID = re.compile(GUID_PATTERN)


def _check_container_id(value: str) -> str:
    if _GUID.match(value):
        # Interned: many subscriptions name the same container; one string serves them all.
        return sys.intern(value.lower())
    if value[:2].lower() == "b." and _GUID.match(value[2:]):
        raise _fail("container_id", "drop the 'b.' prefix: the container id is the bare GUID")
    raise _fail(
        "container_id",
        "must be a project GUID such as 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10 (no 'b.' prefix)",
    )


ContainerId = Annotated[
    str,
    AfterValidator(_check_container_id),
    WithJsonSchema({"type": "string", "pattern": GUID_PATTERN}),
]


HUB_ID_PATTERN = r"^[bB]\." + GUID_PATTERN[1:]


def _check_hub_id(value: str) -> str:
    if _GUID.match(value):
        raise _fail("hub_id", "add the 'b.' prefix: a hub id is the account id as 'b.<GUID>'")
    if not re.match(HUB_ID_PATTERN, value):
        raise _fail(
            "hub_id",
            "must be a BIM 360/ACC hub id such as b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70",
        )
    return value.lower()


HubId = Annotated[
    str,
    AfterValidator(_check_hub_id),
    WithJsonSchema({"type": "string", "pattern": HUB_ID_PATTERN}),
]


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise _fail("regex", f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[
    str,
    Field(min_length=1),
    AfterValidator(_check_regex),
    WithJsonSchema({"type": "string", "format": "regex", "minLength": 1}),
]


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail("url", "must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise _fail("url", "must not contain user:password@ (use headers or a credential)")
    return value


HttpUrl = Annotated[
    str,
    AfterValidator(_check_http_url),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"}),
]
BaseUrl = Annotated[HttpUrl, AfterValidator(lambda v: v.rstrip("/"))]


def split_host_port(value: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; raises ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(value)
    return host, int(port)


def _check_host_port(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError:
        raise _fail("host_port", "must be host:port, e.g. 127.0.0.1:9464") from None
    return value


HostPort = Annotated[
    str,
    AfterValidator(_check_host_port),
    WithJsonSchema({"type": "string", "pattern": r"^.+:\d{1,5}$"}),
]


# --- secrets and their <field>_file form ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FromFile:
    """Placeholder for ``<field>_file: path``; the field's validator reads it."""

    path: object
    conflict: bool


def _read_secret_file(ref: FromFile, field: str) -> str:
    alt = f"{field}_file"
    if ref.conflict:
        raise _fail("secret_conflict", f"give either {field} or {alt}, not both")
    if not isinstance(ref.path, str) or not ref.path:
        raise _fail("secret_file", f"{alt} must be a file path")
    try:
        text = Path(ref.path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _fail("secret_file", f"cannot read {alt} '{ref.path}': {reason}") from None
    except UnicodeDecodeError:
        raise _fail("secret_file", f"{alt} '{ref.path}' is not UTF-8 text") from None
    if not text.strip():
        raise _fail("secret_file", f"{alt} '{ref.path}' is empty")
    return text


def _secret_value(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, FromFile):
        value = _read_secret_file(value, info.field_name or "secret")
    if isinstance(value, str) and not value:
        raise _fail("empty_secret", "must not be empty")
    return value


def secret_lines(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, FromFile):
        text = _read_secret_file(value, info.field_name or "secrets")
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_secret_value)]


def _check_webhook_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not raw.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise _fail(
            "webhook_secret",
            "must be 'whsec_' followed by the base64 of 24 to 64 random bytes (Standard Webhooks)",
        )
    return value


WebhookSecret = Annotated[Secret, AfterValidator(_check_webhook_secret)]


# HTTP field-value characters (RFC 9110): tab, visible ASCII, space and obs-text; no CR or LF.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _check_header_value(value: SecretStr) -> SecretStr:
    if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
        raise _fail("header_value", "must be one line of printable characters (no CR/LF)")
    return value


def header_lines(value: Any, info: ValidationInfo) -> Any:
    """``headers_file``: ``Name: value`` lines (blank lines and ``#`` comments skipped)."""
    if not isinstance(value, FromFile):
        return value
    text = _read_secret_file(value, info.field_name or "headers")
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, val = line.partition(":")
        if not sep or not name.strip():
            raise _fail("headers_file", f"headers_file line {n}: expected 'Name: value'")
        out[name.strip()] = val.strip()
    return out


# A header value is a secret (often an Authorization): never shown in reprs or messages.
HeaderValue = Annotated[SecretStr, AfterValidator(_check_header_value)]


KAFKA_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
"""What Kafka accepts as a topic (or, here, group) name."""


def _split_commas(value: Any) -> Any:
    return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value


BootstrapServers = Annotated[
    list[HostPort],
    BeforeValidator(_split_commas),
    Field(min_length=1),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "description": "host:port[,host:port...]"},
                   {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    ),
]
"""Kafka bootstrap servers: ``host:port`` items, or one comma-separated string."""
