"""Configuration: the YAML file's pydantic models, ``${VAR}`` interpolation and ``load_config``.

Rules the file follows (see config/example.yaml for every option):

- Durations are float seconds written as "500ms", "30s", "5m", "1h", "2d" or a number of seconds;
  sizes are int bytes written as "64KiB", "1MiB" or a number.
- ``${VAR}`` in any string value is replaced from the environment before validation;
  ``${VAR:-default}`` uses ``default`` when VAR is unset or empty; ``$$`` is a literal ``$``.
- Every secret field ``<f>`` can be given as ``<f>_file: /path`` instead (the file is read at load
  time, its trailing newline stripped; for the webhook ``secrets`` list, one secret per line).
- Relative paths (state, jsonl, secret files) are relative to the working directory.
- Container ids are the bare project GUID: a ``b.``-prefixed Data Management id is rejected with a
  hint rather than silently stripped, so one container has exactly one spelling (event ids and
  state keys are derived from it). GUIDs are lower-cased for the same reason.

Every problem becomes one line ``<field path>: <message>`` in ``ConfigError.problems``; messages
never carry input values of secret fields (inputs are never echoed at all).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import importlib.util
import os
import re
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TextIO, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from notifier.durations import ByteSize, Duration, format_duration
from notifier.errors import ConfigError

Loc = tuple[str | int, ...]
Problems = list[tuple[Loc, str]]

DEFAULT_BASE_URL = "https://developer.api.autodesk.com"
TOKEN_PATH = "/authentication/v2/token"
KIB = 1024


# --- field types --------------------------------------------------------------------------------


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"


def _check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise _fail("name", "must be 1-128 characters: letters, digits, '.', '_' or '-'")
    return value


Name = Annotated[
    str, AfterValidator(_check_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
NonEmpty = Annotated[str, Field(min_length=1)]
EntityPart = Annotated[str, Field(min_length=1, max_length=128)]
EntityId = Annotated[str, Field(min_length=1, max_length=512)]
PositiveDuration = Annotated[Duration, Field(gt=0)]

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _check_container_id(value: str) -> str:
    if value[:2].lower() == "b." and re.match(GUID_PATTERN, value[2:]):
        raise _fail("container_id", "drop the 'b.' prefix: the container id is the bare GUID")
    if not re.match(GUID_PATTERN, value):
        raise _fail(
            "container_id",
            "must be a project GUID such as 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10 (no 'b.' prefix)",
        )
    # Interned: many subscriptions name the same container; one string serves them all.
    return sys.intern(value.lower())


ContainerId = Annotated[
    str,
    AfterValidator(_check_container_id),
    WithJsonSchema({"type": "string", "pattern": GUID_PATTERN}),
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
class _FromFile:
    """Placeholder for ``<field>_file: path``; the field's validator reads it."""

    path: object
    conflict: bool


def _read_secret_file(ref: _FromFile, field: str) -> str:
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
    if isinstance(value, _FromFile):
        value = _read_secret_file(value, info.field_name or "secret")
    if isinstance(value, str) and not value:
        raise _fail("empty_secret", "must not be empty")
    return value


def _secret_lines(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, _FromFile):
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


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    """JSON Schema: a sink's ``type`` is required; each secret field has a ``<field>_file`` form."""
    props = schema.get("properties", {})
    if "const" in props.get("type", {}):  # the discriminator of a sink (defaulted for Python use)
        schema.setdefault("required", []).insert(0, "type")
    rules: list[dict[str, Any]] = []
    for field in getattr(cls, "_secret_fields", ()):
        alt = f"{field}_file"
        many = "array" in str(props.get(field, {}))
        props[alt] = {
            "type": "string",
            "title": alt,
            "description": f"path of a file holding {field}"
            + (" (one per line)" if many else " (trailing newline stripped)")
            + f"; instead of {field}",
        }
        rules.append({"not": {"required": [field, alt]}})
        if field in schema.get("required", []):
            schema["required"].remove(field)
            rules.append({"anyOf": [{"required": [field]}, {"required": [alt]}]})
    if rules:
        schema.setdefault("allOf", []).extend(rules)


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra=_schema_extra
    )
    # Fields that also accept ``<field>_file``.
    _secret_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _take_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls._secret_fields:
            return data
        data = dict(data)
        for field in cls._secret_fields:
            alt = f"{field}_file"
            if alt in data:
                data[field] = _FromFile(data.pop(alt), conflict=field in data)
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        """Run every ``_enforce_*`` rule of the model; report all their problems, each at its field.

        Rules only run once every field is valid on its own (pydantic's "after" stage).
        """
        rules = [
            rule for klass in reversed(type(self).__mro__)
            for name, rule in vars(klass).items() if name.startswith("_enforce_")
        ]
        problems = [problem for rule in rules for problem in rule(self)]
        # In document order: by section, then by list index.
        order = {name: i for i, name in enumerate(type(self).model_fields)}
        problems.sort(
            key=lambda p: (
                order.get(str(p[0][0]), len(order)),
                p[0][1] if len(p[0]) > 1 and isinstance(p[0][1], int) else -1,
            )
        )
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(type=_fail("config_rule", msg), loc=loc, input=None)
                    for loc, msg in problems
                ],
            )
        return self

    @model_validator(mode="after")
    def _share_fields_set(self) -> Self:
        """One shared ``model_fields_set`` per distinct set of given fields.

        Pydantic keeps a set per instance (~0.7 KB even for five names); a config with 100,000
        subscriptions would hold 100,000 equal ones (~70 MB). The models are frozen, so the set
        is never changed in place (``model_copy`` copies it).
        """
        fields = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(fields), fields)
        if shared is not fields:
            object.__setattr__(self, "__pydantic_fields_set__", shared)
        return self


# --- sections -------------------------------------------------------------------------------------

Region = Literal["US", "EMEA", "CAN", "GBR", "DEU", "IND", "JPN", "AUS"]


class SourceConfig(_Model):
    """The Relationship Service (or the simulator) and how to call it."""

    base_url: BaseUrl = DEFAULT_BASE_URL
    token_url: BaseUrl | None = None
    region: Region | None = None
    timeout: PositiveDuration = 30.0
    max_attempts: int = Field(5, ge=1)
    concurrency: int = Field(8, ge=1)

    @property
    def resolved_token_url(self) -> str:
        """``token_url``, or ``{base_url}/authentication/v2/token``."""
        return self.token_url or f"{self.base_url}{TOKEN_PATH}"


class CredentialConfig(_Model):
    """One APS user: a three-legged refresh token (rotated), or a static access token."""

    _secret_fields = ("client_secret", "refresh_token", "access_token")

    name: Name
    client_id: NonEmpty | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    access_token: Secret | None = None
    requests_per_minute: int = Field(120, gt=0)
    reserve: float = Field(0.2, ge=0, lt=1)

    def _enforce_refresh_or_static_token(self) -> Problems:
        if self.refresh_token is None and self.access_token is None:
            return [(("refresh_token",), "field required (or a static access_token instead)")]
        if self.refresh_token is not None and self.access_token is not None:
            return [(("access_token",), "give either refresh_token or access_token, not both")]
        if self.access_token is not None:
            return []
        return [
            ((f,), "field required with refresh_token")
            for f in ("client_id", "client_secret")
            if getattr(self, f) is None
        ]

    @property
    def static(self) -> bool:
        """True when the credential is a fixed access token that is never refreshed."""
        return self.access_token is not None


class StateConfig(_Model):
    """Where the SQLite state store lives."""

    path: Path = Path("./var/notifier.db")


class PollConfig(_Model):
    """How often containers are checked and how the request budget is spent."""

    interval: PositiveDuration = 30.0
    max_staleness: PositiveDuration = 600.0
    sync_concurrency: int = Field(4, ge=1)
    status_chunk: int = Field(100, ge=1)
    quarantine_backoff_initial: PositiveDuration = 30.0
    quarantine_backoff_max: PositiveDuration = 1800.0
    scheduler: Literal["adaptive", "round_robin"] = "adaptive"

    def _enforce_staleness_not_below_interval(self) -> Problems:
        if self.max_staleness < self.interval:
            return [(("max_staleness",), "must not be shorter than poll.interval")]
        return []

    def _enforce_backoff_order(self) -> Problems:
        if self.quarantine_backoff_max < self.quarantine_backoff_initial:
            return [(("quarantine_backoff_max",), "must not be below quarantine_backoff_initial")]
        return []


class QueryConfig(_Model):
    """A search query (API parameter names) whose ``page.syncToken`` the subscription follows."""

    domain: EntityPart
    type: EntityPart | None = None
    id: EntityId | None = None
    with_domain: EntityPart | None = Field(None, alias="withDomain")
    with_type: EntityPart | None = Field(None, alias="withType")
    with_id: EntityId | None = Field(None, alias="withId")

    def _enforce_query_hierarchy(self) -> Problems:
        needs = [
            ("id", self.id, "type", self.type),
            ("withType", self.with_type, "withDomain", self.with_domain),
            ("withId", self.with_id, "withType", self.with_type),
        ]
        return [((key,), f"needs {parent}") for key, v, parent, pv in needs if v and not pv]

    def as_params(self) -> dict[str, str]:
        """The search query parameters, with the API's names."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _no_repeats(field: str, values: list[str] | None) -> Problems:
    seen: dict[str, int] = {}
    problems: Problems = []
    for i, value in enumerate(values or []):
        if value in seen:
            problems.append(((field, i), f"'{value}' repeated (first at {field}[{seen[value]}])"))
        seen.setdefault(value, i)
    return problems


class SubscriptionConfig(_Model):
    """What to watch (containers, optional filter), with which credentials, into which sinks."""

    name: Name
    credential: Name | None = None
    credentials: Annotated[list[Name], Field(min_length=1)] | None = None
    container_id: ContainerId | None = None
    container_ids: Annotated[list[ContainerId], Field(min_length=1)] | None = None
    domains: Annotated[list[EntityPart], Field(min_length=1, max_length=20)] | None = None
    query: QueryConfig | None = None
    emit_initial: bool = True
    sinks: Annotated[list[Name], Field(min_length=1)]

    def _enforce_one_credential_form(self) -> Problems:
        return _one_of(self, "credential", "credentials")

    def _enforce_one_container_form(self) -> Problems:
        return _one_of(self, "container_id", "container_ids")

    def _enforce_domains_or_query(self) -> Problems:
        if self.domains is not None and self.query is not None:
            return [(("query",), "give either domains or query, not both")]
        return []

    def _enforce_no_repeats(self) -> Problems:
        return (
            _no_repeats("credentials", self.credentials)
            + _no_repeats("container_ids", self.container_ids)
            + _no_repeats("sinks", self.sinks)
        )

    @property
    def containers(self) -> list[str]:
        """The container ids, whichever form was used."""
        return list(self.container_ids or [self.container_id or ""])

    @property
    def credential_names(self) -> list[str]:
        """The credential names, whichever form was used."""
        return list(self.credentials or [self.credential or ""])


def _one_of(model: BaseModel, single: str, plural: str) -> Problems:
    given = [getattr(model, single) is not None, getattr(model, plural) is not None]
    if all(given):
        return [((plural,), f"give either {single} or {plural}, not both")]
    if not any(given):
        return [((single,), f"field required (or {plural}: [...])")]
    return []


# --- sinks ----------------------------------------------------------------------------------------

KAFKA_TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


def _split_commas(value: Any) -> Any:
    return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value


def _codec_available(codec: str) -> bool:
    """aiokafka compresses gzip itself; snappy, lz4 and zstd need the cramjam package."""
    return codec in ("none", "gzip") or importlib.util.find_spec("cramjam") is not None


class KafkaSinkConfig(_Model):
    """Publish to a Kafka topic (acks=all, idempotent) in the CloudEvents Kafka binding."""

    _secret_fields = ("sasl_password", "ssl_password")

    name: Name
    type: Literal["kafka"] = "kafka"
    bootstrap_servers: Annotated[
        list[HostPort],
        BeforeValidator(_split_commas),
        Field(min_length=1),
        WithJsonSchema(
            {"anyOf": [{"type": "string", "description": "host:port[,host:port...]"},
                       {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
        ),
    ]
    topic: Annotated[
        str, Field(pattern=KAFKA_TOPIC_PATTERN), WithJsonSchema({"type": "string"})
    ]
    key: Literal["relationship", "container"] = "relationship"
    content_mode: Literal["binary", "structured"] = "binary"
    acks: Literal["all"] = "all"
    linger: Duration = 0.005
    max_batch_size: Annotated[ByteSize, Field(ge=1)] = 1024 * KIB
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create_topic: bool = True
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)
    request_timeout: PositiveDuration = 30.0
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: NonEmpty | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: Secret | None = None
    client_id: NonEmpty = "notifier"

    def _enforce_sasl_settings(self) -> Problems:
        sasl = ("sasl_mechanism", "sasl_username", "sasl_password")
        if self.security_protocol.startswith("SASL_"):
            why = f"field required with security_protocol {self.security_protocol}"
            return [((f,), why) for f in sasl if getattr(self, f) is None]
        why = "needs security_protocol SASL_PLAINTEXT or SASL_SSL"
        return [((f,), why) for f in sasl if getattr(self, f) is not None]

    def _enforce_ssl_settings(self) -> Problems:
        if "SSL" in self.security_protocol:
            return []
        return [
            ((f,), "needs security_protocol SSL or SASL_SSL")
            for f in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
            if getattr(self, f) is not None
        ]

    def _enforce_codec_available(self) -> Problems:
        if _codec_available(self.compression):
            return []
        return [(("compression",), f"{self.compression} needs the cramjam package; gzip does not")]


class CircuitBreakerConfig(_Model):
    """Stop calling an endpoint after consecutive failures; probe again after ``reset_after``."""

    failure_threshold: int = Field(5, ge=1)
    reset_after: PositiveDuration = 30.0


RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding",
     "webhook-id", "webhook-timestamp", "webhook-signature"}
)
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# Standard Webhooks' example schedule: 5s, 5m, 30m, 2h, 5h, 10h, 10h after the first attempt.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class WebhookSinkConfig(_Model):
    """POST CloudEvents to an HTTP endpoint, signed per Standard Webhooks, from a durable outbox."""

    _secret_fields = ("secret", "secrets")

    name: Name
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret: WebhookSecret | None = None
    secrets: Annotated[
        list[WebhookSecret], BeforeValidator(_secret_lines), Field(min_length=1)
    ] | None = None
    allow_insecure_http: bool = False
    mode: Literal["single", "batch"] = "single"
    batch_max: int = Field(50, ge=1, le=1000)
    timeout: PositiveDuration = 10.0
    max_concurrency: int = Field(4, ge=1)
    rate_per_second: float | None = Field(None, gt=0)
    retry_schedule: list[Duration] = Field(default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE))
    headers: dict[
        Annotated[str, Field(pattern=HEADER_NAME_PATTERN)],
        Annotated[str, Field(pattern=r"^[^\r\n]*$")],
    ] = Field(default_factory=dict)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    max_response_bytes: Annotated[ByteSize, Field(ge=0)] = 64 * KIB
    # Delivered events are kept this long for `notifier webhooks redeliver`, then purged.
    delivered_retention: Duration = 7 * 86400.0

    def _enforce_https_unless_allowed(self) -> Problems:
        if self.url.lower().startswith("http://") and not self.allow_insecure_http:
            return [(("url",), "must be https:// (or set allow_insecure_http: true)")]
        return []

    def _enforce_one_secret_form(self) -> Problems:
        return _one_of(self, "secret", "secrets")

    def _enforce_no_reserved_headers(self) -> Problems:
        return [
            (("headers", name), "is set by the sink itself")
            for name in self.headers
            if name.lower() in RESERVED_HEADERS
        ]

    @property
    def signing_secrets(self) -> list[SecretStr]:
        """Every secret to sign with (several during a rotation)."""
        return list(self.secrets or ([self.secret] if self.secret else []))


class JsonlSinkConfig(_Model):
    """Append one structured CloudEvent per line to a file, fsynced before the checkpoint."""

    name: Name
    type: Literal["jsonl"] = "jsonl"
    path: Path
    fsync: bool = True


class StdoutSinkConfig(_Model):
    """Print events: readable on a terminal, JSON lines otherwise (``auto``)."""

    name: Name
    type: Literal["stdout"] = "stdout"
    format: Literal["auto", "json", "pretty"] = "auto"


SinkConfig = Annotated[
    Union[KafkaSinkConfig, WebhookSinkConfig, JsonlSinkConfig, StdoutSinkConfig],  # noqa: UP007
    Field(discriminator="type"),
]
AnySink = KafkaSinkConfig | WebhookSinkConfig | JsonlSinkConfig | StdoutSinkConfig
SINK_TYPES = ("kafka", "webhook", "jsonl", "stdout")


class MetricsConfig(_Model):
    """The HTTP server for /metrics, /healthz and /readyz."""

    listen: HostPort = "127.0.0.1:9464"
    enabled: bool = True

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


class LoggingConfig(_Model):
    """Log level and format (``auto``: text on a terminal, JSON otherwise)."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"
    format: Literal["auto", "text", "json"] = "auto"


class Config(_Model):
    """The notifier's configuration file."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    credentials: Annotated[list[CredentialConfig], Field(min_length=1)]
    state: StateConfig = Field(default_factory=StateConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    subscriptions: Annotated[list[SubscriptionConfig], Field(min_length=1)]
    sinks: Annotated[list[SinkConfig], Field(min_length=1)]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    shutdown_timeout: PositiveDuration = 20.0

    def _enforce_unique_names(self) -> Problems:
        problems: Problems = []
        for section, items in (
            ("credentials", self.credentials),
            ("subscriptions", self.subscriptions),
            ("sinks", self.sinks),
        ):
            first: dict[str, int] = {}
            for i, item in enumerate(items):
                if item.name in first:
                    problems.append(
                        ((section, i, "name"),
                         f"duplicate name '{item.name}' (first at {section}[{first[item.name]}])")
                    )
                first.setdefault(item.name, i)
        return problems

    def _enforce_subscription_credentials_exist(self) -> Problems:
        known = list(dict.fromkeys(c.name for c in self.credentials))
        return [
            (loc, f"unknown credential '{name}' (known: {', '.join(known)})")
            for i, sub in enumerate(self.subscriptions)
            for loc, name in _credential_refs(i, sub)
            if name not in known
        ]

    def _enforce_subscription_sinks_exist(self) -> Problems:
        known = list(dict.fromkeys(s.name for s in self.sinks))
        return [
            (("subscriptions", i, "sinks", j), f"unknown sink '{name}' (known: {', '.join(known)})")
            for i, sub in enumerate(self.subscriptions)
            for j, name in enumerate(sub.sinks)
            if name not in known
        ]

    def _enforce_distinct_jsonl_paths(self) -> Problems:
        first: dict[Path, int] = {}
        problems: Problems = []
        for i, sink in enumerate(self.sinks):
            if isinstance(sink, JsonlSinkConfig):
                key = Path(os.path.abspath(sink.path))
                if key in first:
                    problems.append((("sinks", i, "path"), f"same file as sinks[{first[key]}]"))
                first.setdefault(key, i)
        return problems

    def streams(self) -> Iterator[tuple[SubscriptionConfig, str]]:
        """Every (subscription, container id) pair: the unit that owns one sync token."""
        for sub in self.subscriptions:
            for container_id in sub.containers:
                yield sub, container_id

    def credential_named(self, name: str) -> CredentialConfig:
        """The credential called ``name`` (KeyError if there is none)."""
        for cred in self.credentials:
            if cred.name == name:
                return cred
        raise KeyError(name)

    def sink_named(self, name: str) -> AnySink:
        """The sink called ``name`` (KeyError if there is none)."""
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(name)


def _credential_refs(i: int, sub: SubscriptionConfig) -> Problems:
    if sub.credentials is not None:
        return [(("subscriptions", i, "credentials", j), n) for j, n in enumerate(sub.credentials)]
    return [(("subscriptions", i, "credential"), sub.credential or "")]


# --- loading --------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(?:\$|\{([^}]*)\}|\{)")  # "$$", "${...}", or an unterminated "${"
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def format_loc(loc: Loc) -> str:
    """``("subscriptions", 1, "sinks", 0)`` -> ``subscriptions[1].sinks[0]``."""
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def interpolate(data: Any, environ: Mapping[str, str], problems: list[str], loc: Loc = ()) -> Any:
    """``data`` with ``${VAR}`` replaced in every string value; problems are appended."""
    if isinstance(data, dict):
        return {k: interpolate(v, environ, problems, (*loc, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, environ, problems, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        where = format_loc(loc) or "(top level)"
        body = match.group(1)
        ref = _VARIABLE.fullmatch(body) if body is not None else None
        if ref is None:
            problems.append(f"{where}: malformed reference (use ${{NAME}}, ${{NAME:-x}} or $$)")
            return ""
        name, default = ref.group(1), ref.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(f"{where}: environment variable {name} is not set")
                return ""
            return default
        return value

    return _REFERENCE.sub(substitute, data)


class _Loader(yaml.SafeLoader):
    """Safe YAML, refusing duplicate keys (PyYAML would silently keep the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key '{key_node.value}' (first at line {seen[key_node.value]})",
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Built from the parts, never str(exc): that quotes the offending line, maybe a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from None


def _strip_optional(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return tp


def _keys_at(loc: Loc) -> list[str]:
    """The keys the model at ``loc`` accepts (for "did you mean" hints)."""
    tp: Any = Config
    for seg in loc:
        tp = _strip_optional(tp)
        if isinstance(seg, int):
            tp = get_args(tp)[0] if get_origin(tp) is list else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            tp = fields[seg].annotation if seg in fields else None
        elif get_origin(tp) in (Union, types.UnionType):  # a discriminated union: seg is the tag
            tp = next((m for m in get_args(tp) if m.model_fields["type"].default == seg), None)
        else:
            return []
    tp = _strip_optional(tp)
    if not (isinstance(tp, type) and issubclass(tp, _Model)):
        return []
    names = [f.alias or n for n, f in tp.model_fields.items()]
    return names + [f"{f}_file" for f in tp._secret_fields]


def _problem(error: ErrorDetails) -> str:
    """One line ``<path>: <message>`` from a pydantic error, without its input."""
    loc = tuple(error["loc"])
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "missing":
        msg = "field required"
    elif kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        msg = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a mapping"
    elif kind == "union_tag_not_found":
        loc, msg = (*loc, "type"), f"field required (one of: {', '.join(SINK_TYPES)})"
    elif kind == "union_tag_invalid":
        loc, msg = (*loc, "type"), f"unknown sink type (known: {', '.join(SINK_TYPES)})"
    elif kind == "too_short":
        least = ctx.get("min_length")
        msg = f"must have at least {least} item{'s' * (least != 1)}"
    elif kind == "too_long":
        msg = f"must have at most {ctx.get('max_length')} items (has {ctx.get('actual_length')})"
    msg = msg.removeprefix("Value error, ").replace("Input should be ", "must be ")
    # A discriminated union adds the sink type to the location: sinks.0.kafka.topic.
    shown = tuple(
        seg for i, seg in enumerate(loc)
        if not (i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int)
                and seg in SINK_TYPES)
    )
    where = format_loc(shown)
    msg = msg[:1].lower() + msg[1:]
    return f"{where}: {msg}" if where else msg


def _invalid(source: str, problems: list[str]) -> ConfigError:
    unique = list(dict.fromkeys(problems))
    count = f"{len(unique)} problem" + ("s" if len(unique) > 1 else "")
    return ConfigError(f"{source}: invalid configuration ({count})", unique)


def config_from_data(
    data: Any, *, environ: Mapping[str, str] | None = None, source: str = "configuration"
) -> Config:
    """Validate already-parsed YAML (interpolating ``${VAR}``), or raise ConfigError."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping (credentials:, subscriptions:, ...)"
        )
    problems: list[str] = []
    data = interpolate(data, os.environ if environ is None else environ, problems)
    if problems:
        raise _invalid(source, problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise _invalid(source, [_problem(e) for e in errors]) from None


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, interpolate and validate a YAML config file, or raise ConfigError."""
    return config_from_data(_read_yaml(Path(path)), environ=environ, source=str(path))


def summarize(config: Config) -> list[str]:
    """A few lines describing what the config will do, for check-config and the startup log."""
    creds, subs = len(config.credentials), len(config.subscriptions)
    streams = sum(1 for _ in config.streams())
    every = format_duration(config.poll.interval)
    lines = [
        f"{creds} credential{'s' * (creds != 1)}, {subs} subscription{'s' * (subs != 1)}"
        f" -> {streams} stream{'s' * (streams != 1)}, polled every {every}",
        "sinks: " + ", ".join(f"{s.name} ({s.type})" for s in config.sinks),
    ]
    subs_ = config.subscriptions
    unused = [c.name for c in config.credentials
              if not any(c.name in sub.credential_names for sub in subs_)]
    unused += [s.name for s in config.sinks if not any(s.name in sub.sinks for sub in subs_)]
    if unused:
        lines.append("not used by any subscription: " + ", ".join(unused))
    return lines


def print_config_error(exc: ConfigError, err: TextIO) -> None:
    """The headline (file and count) once, then one line per problem."""
    if exc.problems != [str(exc)]:
        print(exc, file=err)
    for line in exc.problems:
        print(line, file=err)


def check_config_main(
    path: str | os.PathLike[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``notifier check-config``: 0 with a summary on stdout, or 2 with every problem on stderr."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print_config_error(exc, stderr or sys.stderr)
        return 2
    out = stdout or sys.stdout
    print(f"{path}: OK", file=out)
    for line in summarize(config):
        print(f"  {line}", file=out)
    return 0


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (values after ``${VAR}`` interpolation)."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["title"] = "notifier configuration"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
