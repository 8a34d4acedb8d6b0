"""Configuration: durations, interpolation, _file secrets, validators, messages, shipped files."""

from __future__ import annotations

import base64
import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.cli.run import check_config_main
from notifier.config import (
    Config,
    JsonlSinkConfig,
    KafkaSinkConfig,
    WebhookSinkConfig,
    config_from_data,
    config_json_schema,
    interpolate,
    load_config,
)
from notifier.config import sinks as sink_config
from notifier.durations import format_duration, parse_byte_size, parse_duration
from notifier.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GUID_A = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
GUID_B = "9e4b7c1d-2a3f-4e5d-8c6b-7a8f9e0d1c2b"
HOOK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_HOOK_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
DELETE = object()


def minimal() -> dict[str, Any]:
    return {
        "credentials": [{"name": "main", "access_token": "tok"}],
        "subscriptions": [
            {"name": "sub-a", "credential": "main", "container_id": GUID_A, "sinks": ["archive"]}
        ],
        "sinks": [{"name": "archive", "type": "jsonl", "path": "./var/events.jsonl"}],
    }


def kafka(**extra: Any) -> dict[str, Any]:
    """A valid kafka sink; a DELETE value removes that key."""
    sink = {"name": "events", "type": "kafka", "bootstrap_servers": "localhost:9092",
            "topic": "rels", **extra}
    return {k: v for k, v in sink.items() if v is not DELETE}


def webhook(**extra: Any) -> dict[str, Any]:
    """A valid webhook sink; a DELETE value removes that key."""
    sink = {"name": "hook", "type": "webhook", "url": "https://example.test/h",
            "secret": HOOK_SECRET, **extra}
    return {k: v for k, v in sink.items() if v is not DELETE}


def patched(changes: dict[str, Any]) -> dict[str, Any]:
    """``minimal()`` with dotted paths ("sinks.0.topic") set, or removed with DELETE."""
    data = minimal()
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        index: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[index]
        elif isinstance(node, list) and index == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[index] = copy.deepcopy(value)
    return data


def problems(data: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_data(data, environ=environ or {})
    assert info.value.__cause__ is None
    # The pydantic error (it quotes inputs) is never chained to what the user sees.
    assert info.value.__context__ is None or info.value.__suppress_context__
    return info.value.problems


# --- durations and sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0),
        ("1h30m", 5400.0), ("1.5s", 1.5), (" 45 ", 45.0), ("0", 0.0), (30, 30.0), (0.25, 0.25),
    ],
)
def test_parse_duration_accepts(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "5 m", "1h30", "", "-5", "5x", "ms", True, None, [1]])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan")])
def test_parse_duration_rejects_negative_and_infinite_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.005, "5ms"), (0.5, "500ms"), (30, "30s"), (600, "10m"), (5400, "1h30m"), (1.5, "1.5s"),
     (90061, "1d1h1m1s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), (512, 512), ("64KiB", 65536), ("1MiB", 1048576), ("1MB", 1000000),
     ("2kb", 2000), ("1 GiB", 1024**3), ("10B", 10)],
)
def test_parse_byte_size_accepts(text: Any, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["big", "1.5MiB", "-1", -1, "1TiB", True, "MiB"])
def test_parse_byte_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_byte_size(text)


# --- ${VAR} interpolation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-host:9092}", {}, "host:9092"),
        ("${A}", {"A": ""}, ""),
        ("$$", {}, "$"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost $5", {}, "cost $5"),
        ("no vars", {}, "no vars"),
    ],
)
def test_interpolate_strings(text: str, env: dict[str, str], expected: str) -> None:
    found: list[str] = []
    assert interpolate({"k": text}, env, found) == {"k": expected}
    assert found == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${MISSING}", "a.b[1]: environment variable MISSING is not set"),
        ("x-${MISSING}-y", "a.b[1]: environment variable MISSING is not set"),
        ("${1BAD}", "a.b[1]: malformed reference (use ${NAME}, ${NAME:-x} or $$)"),
        ("${}", "a.b[1]: malformed reference (use ${NAME}, ${NAME:-x} or $$)"),
        ("${OPEN", "a.b[1]: malformed reference (use ${NAME}, ${NAME:-x} or $$)"),
    ],
)
def test_interpolate_problems_name_variable_and_path(text: str, problem: str) -> None:
    found: list[str] = []
    interpolate({"a": {"b": ["ok", text]}}, {}, found)
    assert found == [problem]


def test_interpolate_leaves_keys_and_non_strings_alone() -> None:
    found: list[str] = []
    data = {"${K}": [1, True, None, 2.5, {"n": "${V}"}]}
    assert interpolate(data, {"K": "key", "V": "v"}, found) == {"${K}": [1, True, None, 2.5,
                                                                       {"n": "v"}]}


def test_interpolated_values_are_validated_with_their_types() -> None:
    data = patched({"credentials.0.requests_per_minute": "${RPM}", "poll.interval": "${EVERY}",
                    "metrics.enabled": "${METRICS:-false}"})
    cfg = config_from_data(data, environ={"RPM": "600", "EVERY": "2s"})
    assert cfg.credentials[0].requests_per_minute == 600
    assert cfg.poll.interval == 2.0
    assert cfg.metrics.enabled is False


def test_unset_variable_reported_without_validating() -> None:
    data = patched({"credentials.0.access_token": "${APS_TOKEN}"})
    assert problems(data) == [
        "credentials[0].access_token: environment variable APS_TOKEN is not set"
    ]


def test_environment_values_never_appear_in_messages() -> None:
    data = patched({"sinks.0": webhook(secret="${HOOK}")})
    found = problems(data, {"HOOK": "whsec_not-base64-SENSITIVE"})
    assert found == [
        "sinks[0].secret: must be 'whsec_' followed by the base64 of 24 to 64 random bytes "
        "(Standard Webhooks)"
    ]
    assert all("SENSITIVE" not in line for line in found)


# --- validators ----------------------------------------------------------------------------------

INVALID = [
    # credentials
    ({"credentials.0.access_token": DELETE},
     "credentials[0].refresh_token: field required (or a static access_token instead)"),
    ({"credentials.0.refresh_token": "r"},
     "credentials[0].access_token: give either refresh_token or access_token, not both"),
    ({"credentials.0": {"name": "main", "refresh_token": "r", "client_secret": "s"}},
     "credentials[0].client_id: field required with refresh_token"),
    ({"credentials.0": {"name": "main", "refresh_token": "r", "client_id": "c"}},
     "credentials[0].client_secret: field required with refresh_token"),
    ({"credentials.0": {"name": "main", "client_id": "c"}},
     "credentials[0].client_secret: field required for a three-legged credential"),
    ({"credentials.0.access_token": ""}, "credentials[0].access_token: must not be empty"),
    ({"credentials.0.requests_per_minute": 0},
     "credentials[0].requests_per_minute: must be greater than 0"),
    ({"credentials.0.reserve": 1}, "credentials[0].reserve: must be less than 1"),
    ({"credentials.0.reserve": -0.1},
     "credentials[0].reserve: must be greater than or equal to 0"),
    ({"credentials.1": {"name": "main", "access_token": "t2"}},
     "credentials[1].name: duplicate name 'main' (first at credentials[0])"),
    ({"credentials.0.name": "bad name"},
     "credentials[0].name: must be 1-128 characters: letters, digits, '.', '_' or '-'"),
    ({"credentials": []}, "credentials: must have at least 1 item"),
    # source
    ({"source.region": "MARS"},
     "source.region: must be 'US', 'EMEA', 'CAN', 'GBR', 'DEU', 'IND', 'JPN' or 'AUS'"),
    ({"source.base_url": "ftp://x"}, "source.base_url: must be an http:// or https:// URL"),
    ({"source.token_url": "not a url"}, "source.token_url: must be an http:// or https:// URL"),
    ({"source.timeout": "0s"}, "source.timeout: must be greater than 0"),
    ({"source.max_attempts": 0}, "source.max_attempts: must be greater than or equal to 1"),
    # poll
    ({"poll.interval": "fast"},
     "poll.interval: invalid duration 'fast' (use 500ms, 30s, 5m or seconds)"),
    ({"poll.interval": "5m", "poll.max_staleness": "1m"},
     "poll.max_staleness: must not be shorter than poll.interval"),
    ({"poll.quarantine_backoff_initial": "1h", "poll.quarantine_backoff_max": "1m"},
     "poll.quarantine_backoff_max: must not be below quarantine_backoff_initial"),
    ({"poll.scheduler": "random"}, "poll.scheduler: must be 'adaptive' or 'round_robin'"),
    ({"poll.status_chunk": 0}, "poll.status_chunk: must be greater than or equal to 1"),
    ({"poll.intervall": "5s"}, "poll.intervall: unknown field (did you mean 'interval'?)"),
    # subscriptions
    ({"subscriptions.0.name": "a/b"},
     "subscriptions[0].name: must be 1-128 characters: letters, digits, '.', '_' or '-'"),
    ({"subscriptions.0.credentials": ["main"]},
     "subscriptions[0].credentials: give either credential or credentials, not both"),
    ({"subscriptions.0.credential": DELETE},
     "subscriptions[0].credential: field required (or credentials: [...])"),
    ({"subscriptions.0.credential": DELETE, "subscriptions.0.credentials": []},
     "subscriptions[0].credentials: must have at least 1 item"),
    ({"subscriptions.0.credential": "mian"},
     "subscriptions[0].credential: unknown credential 'mian' (known: main)"),
    ({"subscriptions.0.credential": DELETE, "subscriptions.0.credentials": ["main", "other"]},
     "subscriptions[0].credentials[1]: unknown credential 'other' (known: main)"),
    ({"subscriptions.0.credential": DELETE, "subscriptions.0.credentials": ["main", "main"]},
     "subscriptions[0].credentials[1]: 'main' repeated (first at credentials[0])"),
    ({"subscriptions.0.container_ids": [GUID_B]},
     "subscriptions[0].container_ids: give either container_id or container_ids, not both"),
    ({"subscriptions.0.container_id": DELETE},
     "subscriptions[0].container_id: field required (or container_ids: [...] or hub_id)"),
    ({"subscriptions.0.container_id": "b." + GUID_A},
     "subscriptions[0].container_id: drop the 'b.' prefix: the container id is the bare GUID"),
    ({"subscriptions.0.container_id": "project-42"},
     "subscriptions[0].container_id: must be a project GUID such as "
     "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10 (no 'b.' prefix)"),
    ({"subscriptions.0.container_id": DELETE, "subscriptions.0.container_ids": [GUID_A, "x"]},
     "subscriptions[0].container_ids[1]: must be a project GUID such as "
     "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10 (no 'b.' prefix)"),
    ({"subscriptions.0.container_id": DELETE,
      "subscriptions.0.container_ids": [GUID_A, GUID_A.upper()]},
     f"subscriptions[0].container_ids[1]: '{GUID_A}' repeated (first at container_ids[0])"),
    ({"subscriptions.0.domains": []},
     "subscriptions[0].domains: must have at least 1 item"),
    ({"subscriptions.0.domains": [f"d{i}" for i in range(21)]},
     "subscriptions[0].domains: must have at most 20 items (has 21)"),
    ({"subscriptions.0.domains": ["a"], "subscriptions.0.query": {"domain": "a"}},
     "subscriptions[0].query: give either domains or query, not both"),
    ({"subscriptions.0.query": {"type": "issue"}}, "subscriptions[0].query.domain: field required"),
    ({"subscriptions.0.query": {"domain": "d", "id": "1"}},
     "subscriptions[0].query.id: needs type"),
    ({"subscriptions.0.query": {"domain": "d", "withType": "t"}},
     "subscriptions[0].query.withType: needs withDomain"),
    ({"subscriptions.0.query": {"domain": "d", "withDomain": "w", "withId": "1"}},
     "subscriptions[0].query.withId: needs withType"),
    ({"subscriptions.0.query": {"domain": "d", "with_domain": "w"}},
     "subscriptions[0].query.with_domain: unknown field (did you mean 'withDomain'?)"),
    ({"subscriptions.0.sinks": []},
     "subscriptions[0].sinks: must have at least 1 item"),
    ({"subscriptions.0.sinks": ["evnts"]},
     "subscriptions[0].sinks[0]: unknown sink 'evnts' (known: archive)"),
    ({"subscriptions.0.sinks": ["archive", "archive"]},
     "subscriptions[0].sinks[1]: 'archive' repeated (first at sinks[0])"),
    ({"subscriptions.0.emit_initial": "sometimes"},
     "subscriptions[0].emit_initial: must be a valid boolean, unable to interpret input"),
    ({"subscriptions.1": {"name": "sub-a", "credential": "main", "container_id": GUID_B,
                          "sinks": ["archive"]}},
     "subscriptions[1].name: duplicate name 'sub-a' (first at subscriptions[0])"),
    # sinks in general
    ({"sinks.0.type": "s3"},
     "sinks[0].type: unknown sink type (known: kafka, webhook, jsonl, stdout)"),
    ({"sinks.0.type": DELETE},
     "sinks[0].type: field required (one of: kafka, webhook, jsonl, stdout)"),
    ({"sinks.0.path": DELETE}, "sinks[0].path: field required"),
    ({"sinks.0.fsync": "maybe"},
     "sinks[0].fsync: must be a valid boolean, unable to interpret input"),
    ({"sinks.1": {"name": "archive", "type": "stdout"}},
     "sinks[1].name: duplicate name 'archive' (first at sinks[0])"),
    ({"sinks.1": {"name": "copy", "type": "jsonl", "path": "var/../var/events.jsonl"}},
     "sinks[1].path: same file as sinks[0]"),
    ({"sinks.1": {"name": "tty", "type": "stdout", "format": "xml"}},
     "sinks[1].format: must be 'auto', 'json' or 'pretty'"),
    ({"sinks": []}, "sinks: must have at least 1 item"),
    # kafka
    ({"sinks.0": kafka(topic=DELETE)}, "sinks[0].topic: field required"),
    ({"sinks.0": kafka(topc="x")}, "sinks[0].topc: unknown field (did you mean 'topic'?)"),
    ({"sinks.0": kafka(topic="has space")},
     "sinks[0].topic: string should match pattern '^[A-Za-z0-9._-]{1,249}$'"),
    ({"sinks.0": kafka(bootstrap_servers="localhost")},
     "sinks[0].bootstrap_servers[0]: must be host:port, e.g. 127.0.0.1:9464"),
    ({"sinks.0": kafka(bootstrap_servers=[])},
     "sinks[0].bootstrap_servers: must have at least 1 item"),
    ({"sinks.0": kafka(acks=1)}, "sinks[0].acks: must be 'all'"),
    ({"sinks.0": kafka(key="partition")}, "sinks[0].key: must be 'relationship' or 'container'"),
    ({"sinks.0": kafka(content_mode="json")},
     "sinks[0].content_mode: must be 'binary' or 'structured'"),
    ({"sinks.0": kafka(compression="brotli")},
     "sinks[0].compression: must be 'none', 'gzip', 'snappy', 'lz4' or 'zstd'"),
    ({"sinks.0": kafka(max_batch_size="huge")},
     "sinks[0].max_batch_size: invalid size 'huge' (use 64KiB, 1MiB or a number of bytes)"),
    ({"sinks.0": kafka(linger="soon")},
     "sinks[0].linger: invalid duration 'soon' (use 500ms, 30s, 5m or seconds)"),
    ({"sinks.0": kafka(partitions=0)}, "sinks[0].partitions: must be greater than or equal to 1"),
    ({"sinks.0": kafka(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u")},
     "sinks[0].sasl_password: field required with security_protocol SASL_SSL"),
    ({"sinks.0": kafka(sasl_username="u")},
     "sinks[0].sasl_username: needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
    ({"sinks.0": kafka(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI",
                       sasl_username="u", sasl_password="p")},
     "sinks[0].sasl_mechanism: must be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"sinks.0": kafka(ssl_cafile="/ca.pem")},
     "sinks[0].ssl_cafile: needs security_protocol SSL or SASL_SSL"),
    ({"sinks.0": kafka(ssl_check_hostname=False)},
     "sinks[0].ssl_check_hostname: needs security_protocol SSL or SASL_SSL"),
    ({"sinks.0": kafka(security_protocol="SSL", ssl_keyfile="/client.key")},
     "sinks[0].ssl_certfile: a client certificate needs both ssl_certfile and ssl_keyfile"),
    ({"sinks.0": kafka(security_protocol="SSL", ssl_certfile="/client.pem")},
     "sinks[0].ssl_keyfile: a client certificate needs both ssl_certfile and ssl_keyfile"),
    ({"sinks.0": kafka(security_protocol="SSL", ssl_password="pw")},
     "sinks[0].ssl_password: is the passphrase of ssl_keyfile, which is not set"),
    ({"sinks.0": kafka(replication_factor=0)},
     "sinks[0].replication_factor: must be greater than or equal to 1"),
    # webhook
    ({"sinks.0": webhook(url="http://example.test/h")},
     "sinks[0].url: must be https:// (or set allow_insecure_http: true)"),
    ({"sinks.0": webhook(url="ftp://example.test/h")},
     "sinks[0].url: must be an http:// or https:// URL"),
    ({"sinks.0": webhook(url="https://user:pw@example.test/h")},
     "sinks[0].url: must not contain user:password@ (use headers or a credential)"),
    ({"sinks.0": webhook(secret=DELETE)},
     "sinks[0].secret: field required (or secrets: [...])"),
    ({"sinks.0": webhook(secrets=[HOOK_SECRET])},
     "sinks[0].secrets: give either secret or secrets, not both"),
    ({"sinks.0": webhook(secret="whsec_" + base64.b64encode(b"short").decode())},
     "sinks[0].secret: must be 'whsec_' followed by the base64 of 24 to 64 random bytes "
     "(Standard Webhooks)"),
    ({"sinks.0": webhook(secret=DELETE, secrets=[HOOK_SECRET, "plain"])},
     "sinks[0].secrets[1]: must be 'whsec_' followed by the base64 of 24 to 64 random bytes "
     "(Standard Webhooks)"),
    ({"sinks.0": webhook(headers={"Webhook-Signature": "x"})},
     "sinks[0].headers.Webhook-Signature: is set by the sink itself"),
    ({"sinks.0": webhook(headers={"X-Ok": "a\r\nInjected: 1"})},
     "sinks[0].headers.X-Ok: must be one line of printable characters (no CR/LF)"),
    ({"sinks.0": webhook(mode="stream")}, "sinks[0].mode: must be 'single' or 'batch'"),
    ({"sinks.0": webhook(batch_max=0)}, "sinks[0].batch_max: must be greater than or equal to 1"),
    ({"sinks.0": webhook(rate_per_second=0)}, "sinks[0].rate_per_second: must be greater than 0"),
    ({"sinks.0": webhook(retry_schedule=["5s", "later"])},
     "sinks[0].retry_schedule[1]: invalid duration 'later' (use 500ms, 30s, 5m or seconds)"),
    ({"sinks.0": webhook(circuit_breaker={"failure_threshold": 0})},
     "sinks[0].circuit_breaker.failure_threshold: must be greater than or equal to 1"),
    # metrics, logging, top level
    ({"metrics.listen": "9464"}, "metrics.listen: must be host:port, e.g. 127.0.0.1:9464"),
    ({"metrics.listen": "localhost:99999"},
     "metrics.listen: must be host:port, e.g. 127.0.0.1:9464"),
    ({"logging.level": "LOUD"}, "logging.level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ({"logging.format": "xml"}, "logging.format: must be 'auto', 'text' or 'json'"),
    ({"shutdown_timeout": 0}, "shutdown_timeout: must be greater than 0"),
    ({"poll": "30s"}, "poll: must be a mapping"),
    ({"subscription": []}, "subscription: unknown field (did you mean 'subscriptions'?)"),
]


@pytest.mark.parametrize(("changes", "problem"), INVALID)
def test_invalid_field_is_reported_with_its_path(changes: dict[str, Any], problem: str) -> None:
    data = patched(changes)
    if changes.get("sinks.0", {}).get("type") in ("kafka", "webhook"):
        data["subscriptions"][0]["sinks"] = [data["sinks"][0]["name"]]
    assert problems(data) == [problem]


@pytest.mark.parametrize(
    "changes",
    [
        {"sinks.0": webhook(url="http://127.0.0.1:8081/h", allow_insecure_http=True)},
        {"sinks.0": webhook(secret=DELETE, secrets=[HOOK_SECRET, OLD_HOOK_SECRET])},
        {"sinks.0": kafka(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="u", sasl_password="p", ssl_cafile="/ca.pem")},
        {"sinks.0": kafka(compression="gzip")},
        {"credentials.0": {"name": "main", "client_id": "c", "client_secret": "s",
                           "refresh_token": "r"}},
        # seeded later by `notifier auth login`, which stores the refresh token
        {"credentials.0": {"name": "main", "client_id": "c", "client_secret": "s"}},
        {"subscriptions.0.query": {"domain": "d", "type": "t", "id": "1", "withDomain": "w",
                                   "withType": "u", "withId": "2"}},
        {"subscriptions.0.domains": [f"d{i}" for i in range(20)]},
        {"logging.level": "debug"},
        {"metrics.listen": "[::1]:0"},
        {"poll.interval": "10m", "poll.max_staleness": "10m"},
    ],
)
def test_valid_variations_load(changes: dict[str, Any]) -> None:
    data = patched(changes)
    if changes.get("sinks.0", {}).get("type") in ("kafka", "webhook"):
        data["subscriptions"][0]["sinks"] = [data["sinks"][0]["name"]]
    assert isinstance(config_from_data(data, environ={}), Config)


def test_compression_needing_cramjam_is_refused_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_config, "_codec_available", lambda codec: codec == "none")
    data = patched({"sinks.0": kafka(compression="zstd"), "subscriptions.0.sinks": ["events"]})
    assert problems(data) == ["sinks[0].compression: zstd needs the cramjam package; gzip does not"]


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    data = patched({
        "credentials.1": {"name": "main", "access_token": "x"},
        "subscriptions.0.sinks": ["evnts"],
        "subscriptions.0.credential": "nobody",
    })
    assert problems(data) == [
        "credentials[1].name: duplicate name 'main' (first at credentials[0])",
        "subscriptions[0].credential: unknown credential 'nobody' (known: main)",
        "subscriptions[0].sinks[0]: unknown sink 'evnts' (known: archive)",
    ]
    field_errors = patched({"poll.interval": "fast", "sinks.0.path": DELETE,
                            "credentials.0.reserve": 2})
    assert problems(field_errors) == [
        "credentials[0].reserve: must be less than 1",
        "poll.interval: invalid duration 'fast' (use 500ms, 30s, 5m or seconds)",
        "sinks[0].path: field required",
    ]


# --- secrets and <field>_file --------------------------------------------------------------------


def test_secret_files_are_read_and_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "cs").write_text("client-secret\n")
    (tmp_path / "rt").write_text("refresh token with spaces  \r\n")
    (tmp_path / "kp").write_text("kafka-pw")
    (tmp_path / "hooks").write_text(f"# current first\n{HOOK_SECRET}\n\n  {OLD_HOOK_SECRET}  \n")
    data = patched({
        "credentials.0": {"name": "main", "client_id": "c",
                          "client_secret_file": str(tmp_path / "cs"),
                          "refresh_token_file": str(tmp_path / "rt")},
        "sinks.1": kafka(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                         sasl_username="u", sasl_password_file=str(tmp_path / "kp")),
        "sinks.2": webhook(secret=DELETE, secrets_file=str(tmp_path / "hooks")),
    })
    cfg = config_from_data(data, environ={})
    cred = cfg.credentials[0]
    assert cred.client_secret is not None
    assert cred.client_secret.get_secret_value() == "client-secret"
    assert cred.refresh_token is not None
    assert cred.refresh_token.get_secret_value() == "refresh token with spaces  "
    assert not cred.static
    sink = cfg.sink_named("events")
    assert isinstance(sink, KafkaSinkConfig)
    assert sink.sasl_password is not None
    assert sink.sasl_password.get_secret_value() == "kafka-pw"
    hook = cfg.sink_named("hook")
    assert isinstance(hook, WebhookSinkConfig)
    assert [s.get_secret_value() for s in hook.signing_secrets] == [HOOK_SECRET, OLD_HOOK_SECRET]
    assert "client-secret" not in repr(cfg)


@pytest.mark.parametrize(
    ("setup", "field", "problem"),
    [
        (None, {"access_token_file": "{dir}/absent"},
         "credentials[0].access_token: cannot read access_token_file '{dir}/absent': "
         "No such file or directory"),
        ("", {"access_token_file": "{dir}/f"},
         "credentials[0].access_token: access_token_file '{dir}/f' is empty"),
        ("\n", {"access_token_file": "{dir}/f"},
         "credentials[0].access_token: access_token_file '{dir}/f' is empty"),
        ("tok", {"access_token_file": "{dir}"},
         "credentials[0].access_token: cannot read access_token_file '{dir}': Is a directory"),
        ("tok", {"access_token_file": "{dir}/f", "access_token": "inline"},
         "credentials[0].access_token: give either access_token or access_token_file, not both"),
        ("tok", {"access_token_file": 5},
         "credentials[0].access_token: access_token_file must be a file path"),
    ],
)
def test_secret_file_problems(
    tmp_path: Path, setup: str | None, field: dict[str, Any], problem: str
) -> None:
    if setup is not None:
        (tmp_path / "f").write_text(setup)
    cred = {"name": "main"} | {
        k: v.format(dir=tmp_path) if isinstance(v, str) else v for k, v in field.items()
    }
    assert problems(patched({"credentials.0": cred})) == [problem.format(dir=tmp_path)]


def test_webhook_header_values_are_secrets_and_have_a_file_form(tmp_path: Path) -> None:
    token = "Bearer sk-live-HEADER-SECRET"
    inline = config_from_data(patched({"sinks.1": webhook(headers={"Authorization": token})}),
                              environ={})
    hook = inline.sink_named("hook")
    assert isinstance(hook, WebhookSinkConfig)
    assert hook.header_values == {"Authorization": token}
    for shown in (repr(inline), str(inline), repr(hook.headers), hook.model_dump_json()):
        assert "sk-live" not in shown
    (tmp_path / "h").write_text(f"# for the field app\nAuthorization: {token}\n\nX-Team: field\n")
    from_file = config_from_data(
        patched({"sinks.1": webhook(headers_file=str(tmp_path / "h"))}), environ={})
    hook = from_file.sink_named("hook")
    assert isinstance(hook, WebhookSinkConfig)
    assert hook.header_values == {"Authorization": token, "X-Team": "field"}
    assert "sk-live" not in repr(from_file)
    (tmp_path / "bad").write_text(f"Authorization {token}\n")
    assert problems(patched({"sinks.1": webhook(headers_file=str(tmp_path / "bad"))})) == [
        "sinks[1].headers: headers_file line 1: expected 'Name: value'"]
    both = patched({"sinks.1": webhook(headers={"X": "1"}, headers_file=str(tmp_path / "h"))})
    assert problems(both) == ["sinks[1].headers: give either headers or headers_file, not both"]
    # A bad value is reported by name, never quoted.
    msgs = problems(patched({"sinks.1": webhook(headers={"Authorization": "sk-live\x01x"})}))
    assert msgs == ["sinks[1].headers.Authorization: must be one line of printable characters "
                    "(no CR/LF)"]


def test_unreadable_secret_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (a chmod 0 file can).
    secret = tmp_path / "a-directory"
    secret.mkdir()
    data = patched({"credentials.0": {"name": "main", "access_token_file": str(secret)}})
    assert problems(data) == [
        f"credentials[0].access_token: cannot read access_token_file '{secret}': Is a directory"
    ]


def test_secret_file_path_can_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    data = patched({"credentials.0": {"name": "main", "access_token_file": "${TOKEN_FILE}"}})
    cfg = config_from_data(data, environ={"TOKEN_FILE": str(tmp_path / "tok")})
    assert cfg.credentials[0].access_token is not None
    assert cfg.credentials[0].access_token.get_secret_value() == "from-file"
    assert cfg.credentials[0].static


@pytest.mark.parametrize(
    "changes",
    [
        {"credentials.0.access_token": 123456789},
        {"credentials.0.access_token": ["123456789"]},
        {"sinks.0": webhook(secret="whsec_123456789")},
        {"sinks.0": webhook(secret=DELETE, secrets=["whsec_123456789"])},
        {"sinks.0": kafka(sasl_password="123456789")},
        {"credentials.0": {"name": "main", "refresh_token": "123456789"}},
    ],
)
def test_secret_values_never_appear_in_messages(changes: dict[str, Any]) -> None:
    data = patched(changes)
    if changes.get("sinks.0", {}).get("type") in ("kafka", "webhook"):
        data["subscriptions"][0]["sinks"] = [data["sinks"][0]["name"]]
    found = problems(data)
    assert found
    assert all("123456789" not in line for line in found), found


# --- files ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "{p}: the file is empty"),
        ("# only a comment\n", "{p}: the file is empty"),
        ("- a\n- b\n", "{p}: the top level must be a mapping (credentials:, subscriptions:, ...)"),
        ("just text\n", "{p}: the top level must be a mapping (credentials:, subscriptions:, ...)"),
        ("poll:\n  interval: 5s\n   bad: [\n", "{p}:3:7: invalid YAML: mapping values are not "
         "allowed here"),
        ("a: [1, 2\n", "{p}:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("poll: {}\npoll: {}\n", "{p}:2:1: invalid YAML: duplicate key 'poll' (first at line 1)"),
        ("poll:\n  interval: 1s\n  interval: 2s\n",
         "{p}:3:3: invalid YAML: duplicate key 'interval' (first at line 2)"),
    ],
)
def test_file_level_problems(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == message.format(p=path)
    assert info.value.problems == [str(info.value)]


def test_yaml_error_does_not_quote_the_offending_line(tmp_path: Path) -> None:
    path = write(tmp_path, "credentials:\n  - name: main\n    access_token: s3cr3t: oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "s3cr3t" not in str(info.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    cfg_text = (
        "credentials: [{name: main, access_token: t}]\n"
        "sinks: [{name: archive, type: jsonl, path: a.jsonl}]\n"
        "subscriptions:\n"
        f"  - &base {{name: a, credential: main, container_id: {GUID_A}, sinks: [archive]}}\n"
        "  - <<: *base\n"
        "    name: b\n"
    )
    cfg = load_config(write(tmp_path, cfg_text))  # a merge key then an override is no duplicate
    assert [s.name for s in cfg.subscriptions] == ["a", "b"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: file not found$"):
        load_config(tmp_path / "absent.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_load_config_uses_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, (ROOT / "config" / "demo.yaml").read_text().replace(
        "access_token: demo-access-token", "access_token: ${DEMO_TOKEN}"))
    monkeypatch.setenv("DEMO_TOKEN", "from-env")
    token = load_config(path).credentials[0].access_token
    assert token is not None
    assert token.get_secret_value() == "from-env"
    monkeypatch.delenv("DEMO_TOKEN")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "credentials[0].access_token: environment variable DEMO_TOKEN is not set"
    ]


# --- check-config --------------------------------------------------------------------------------


def test_check_config_main_reports_problems_and_returns_2(tmp_path: Path) -> None:
    path = write(tmp_path, "credentials: [{name: main, access_token: t}]\n"
                           "poll: {interval: fast}\n"
                           "sinks: [{name: events, type: kafka, bootstrap_servers: 'h:9092'}]\n"
                           f"subscriptions: [{{name: a, credential: main, container_id: {GUID_A},"
                           " sinks: [evnts]}]\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(path, stdout=out, stderr=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        f"{path}: invalid configuration (2 problems)",
        "poll.interval: invalid duration 'fast' (use 500ms, 30s, 5m or seconds)",
        "sinks[0].topic: field required",
    ]


def test_check_config_main_missing_file_returns_2(tmp_path: Path) -> None:
    err = io.StringIO()
    assert check_config_main(tmp_path / "nope.yaml", stderr=err) == 2
    assert err.getvalue() == f"{tmp_path / 'nope.yaml'}: file not found\n"


def test_check_config_main_summarizes_a_good_file() -> None:
    out = io.StringIO()
    assert check_config_main(ROOT / "config" / "demo.yaml", stdout=out, stderr=io.StringIO()) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("demo.yaml: OK")
    assert lines[1] == "  1 credential, 3 subscriptions -> 4 streams, polled every 2s"
    assert lines[2] == "  sinks: console (stdout), archive (jsonl)"


# --- shipped files and helpers -------------------------------------------------------------------

DEMO_CONTAINERS = [
    "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70",
    "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53",
    "c4d5e6f7-8091-4a2b-8c3d-4e5f60718293",
]


def test_demo_config_loads_against_the_simulator() -> None:
    cfg = load_config(ROOT / "config" / "demo.yaml", environ={})
    assert cfg.source.base_url == "http://127.0.0.1:8080"
    assert cfg.source.resolved_token_url == "http://127.0.0.1:8080/authentication/v2/token"
    cred = cfg.credentials[0]
    assert cred.static
    assert cred.access_token is not None
    assert cred.access_token.get_secret_value() == "demo-access-token"
    assert cfg.state.path == Path("var/demo.db")
    assert cfg.poll.interval == 2.0
    assert sorted({cid for _, cid in cfg.streams()}) == DEMO_CONTAINERS
    assert {s.type for s in cfg.sinks} == {"stdout", "jsonl"}
    archive = cfg.sink_named("archive")
    assert isinstance(archive, JsonlSinkConfig)
    assert archive.path == Path("var/demo-events.jsonl")


def test_example_config_loads_with_its_environment(tmp_path: Path) -> None:
    (tmp_path / "rt2").write_text("second-refresh-token\n")
    env = {"APS_CLIENT_ID": "cid", "APS_CLIENT_SECRET": "csecret", "APS_REFRESH_TOKEN": "rt1",
           "APS_SECOND_REFRESH_TOKEN_FILE": str(tmp_path / "rt2"), "HOOK_SECRET": HOOK_SECRET}
    cfg = load_config(ROOT / "config" / "example.yaml", environ=env)
    assert [c.name for c in cfg.credentials] == ["main", "second"]
    second = cfg.credential_named("second")
    assert second.refresh_token is not None
    assert second.refresh_token.get_secret_value() == "second-refresh-token"
    assert cfg.source.resolved_token_url == (
        "https://developer.api.autodesk.com/authentication/v2/token"
    )
    assert [(s.name, c) for s, c in cfg.streams()] == [
        ("project-a", GUID_A),
        ("coordination-issues-on-assets", GUID_B),
        ("coordination-issues-on-assets", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
    ]
    assert [s.hub_id for s in cfg.hub_subscriptions] == ["b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"]
    sub = cfg.subscriptions[1]
    assert sub.credential_names == ["main", "second"]
    assert sub.query is not None
    assert sub.query.as_params() == {"domain": "autodesk-bim360-issue", "type": "coordination",
                                     "withDomain": "autodesk-bim360-asset"}
    events = cfg.sink_named("events")
    assert isinstance(events, KafkaSinkConfig)
    assert events.bootstrap_servers == ["localhost:9092"]
    assert events.linger == pytest.approx(0.005)
    assert events.max_batch_size == 1024 * 1024
    hook = cfg.sink_named("field-app")
    assert isinstance(hook, WebhookSinkConfig)
    assert hook.retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert hook.max_response_bytes == 64 * 1024
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.metrics.port == 9464
    assert cfg.shutdown_timeout == 20.0
    with pytest.raises(KeyError):
        cfg.sink_named("nope")


def test_example_config_without_environment_names_every_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "config" / "example.yaml", environ={})
    assert "credentials[0].client_secret: environment variable APS_CLIENT_SECRET is not set" \
        in info.value.problems
    assert "sinks[1].secret: environment variable HOOK_SECRET is not set" in info.value.problems


def test_defaults() -> None:
    cfg = config_from_data(minimal(), environ={})
    assert cfg.source.base_url == "https://developer.api.autodesk.com"
    assert cfg.source.region is None
    assert (cfg.source.timeout, cfg.source.max_attempts, cfg.source.concurrency) == (30.0, 5, 8)
    assert (cfg.credentials[0].requests_per_minute, cfg.credentials[0].reserve) == (120, 0.2)
    assert cfg.state.path == Path("var/notifier.db")
    poll = cfg.poll
    assert (poll.interval, poll.max_staleness, poll.sync_concurrency, poll.status_chunk) == (
        5.0, None, 4, 100)
    assert (poll.quarantine_backoff_initial, poll.quarantine_backoff_max) == (30.0, 1800.0)
    assert poll.scheduler == "adaptive"
    assert cfg.subscriptions[0].emit_initial is True
    assert (cfg.metrics.listen, cfg.metrics.enabled) == ("127.0.0.1:9464", True)
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "auto")
    assert cfg.shutdown_timeout == 20.0
    k = KafkaSinkConfig.model_validate(kafka())
    assert (k.key, k.content_mode, k.acks, k.compression, k.create_topic) == (
        "relationship", "binary", "all", "none", True)
    # replication_factor None: a created topic gets min(3, brokers) replicas
    assert (k.partitions, k.replication_factor, k.request_timeout) == (3, None, 30.0)
    assert k.ssl_check_hostname is True
    assert (k.security_protocol, k.client_id) == ("PLAINTEXT", "notifier")
    w = WebhookSinkConfig.model_validate(webhook())
    assert (w.mode, w.batch_max, w.timeout, w.max_concurrency, w.rate_per_second) == (
        "single", 50, 10.0, 4, None)
    assert (w.circuit_breaker.failure_threshold, w.circuit_breaker.reset_after) == (5, 30.0)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"source.base_url": "http://sim:8080/", "source.allow_insecure_http": True},
         "http://sim:8080/authentication/v2/token"),
        ({"source.token_url": "https://auth.example/token"}, "https://auth.example/token"),
    ],
)
def test_resolved_token_url(changes: dict[str, Any], expected: str) -> None:
    assert config_from_data(patched(changes), environ={}).source.resolved_token_url == expected


def test_container_ids_are_lowercased_and_forms_normalised() -> None:
    data = patched({"subscriptions.0.container_id": GUID_A.upper(),
                    "subscriptions.0.credential": DELETE,
                    "subscriptions.0.credentials": ["main"],
                    "metrics.listen": "[::1]:9000",
                    "sinks.1": kafka(bootstrap_servers="a:1, b:2,")})
    cfg = config_from_data(data, environ={})
    sub = cfg.subscriptions[0]
    assert sub.containers == [GUID_A]
    assert sub.credential_names == ["main"]
    assert list(cfg.streams()) == [(sub, GUID_A)]
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9000)
    events = cfg.sink_named("events")
    assert isinstance(events, KafkaSinkConfig)
    assert events.bootstrap_servers == ["a:1", "b:2"]


def test_config_is_frozen() -> None:
    cfg = config_from_data(minimal(), environ={})
    with pytest.raises(ValueError, match="frozen"):
        cfg.poll.interval = 1.0  # type: ignore[misc]


# --- JSON Schema ---------------------------------------------------------------------------------


def test_json_schema_describes_file_alternatives_and_sink_types() -> None:
    schema = config_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    defs = schema["$defs"]
    cred = defs["CredentialConfig"]
    for field in ("client_secret", "refresh_token", "access_token"):
        assert cred["properties"][f"{field}_file"]["type"] == "string"
        assert {"not": {"required": [field, f"{field}_file"]}} in cred["allOf"]
    assert "secrets_file" in defs["WebhookSinkConfig"]["properties"]
    assert "sasl_password_file" in defs["KafkaSinkConfig"]["properties"]
    for name in ("KafkaSinkConfig", "WebhookSinkConfig", "JsonlSinkConfig", "StdoutSinkConfig"):
        assert "type" in defs[name]["required"]
    assert defs["QueryConfig"]["required"] == ["domain"]
    assert "withDomain" in defs["QueryConfig"]["properties"]
    assert schema["additionalProperties"] is False


def test_json_schema_accepts_shipped_configs_and_rejects_a_bad_one(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(config_json_schema())
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert list(validator.iter_errors(demo)) == []
    env = {"APS_CLIENT_ID": "c", "APS_CLIENT_SECRET": "s", "APS_REFRESH_TOKEN": "r",
           "APS_SECOND_REFRESH_TOKEN_FILE": "/x", "HOOK_SECRET": HOOK_SECRET}
    found: list[str] = []
    example = interpolate(yaml.safe_load((ROOT / "config" / "example.yaml").read_text()), env,
                          found)
    assert found == []
    assert list(validator.iter_errors(example)) == []
    both = patched({"credentials.0.access_token_file": "/x"})
    assert list(validator.iter_errors(both))
    untyped = patched({"sinks.0.type": DELETE})
    assert list(validator.iter_errors(untyped))
