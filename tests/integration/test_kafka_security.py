"""Kafka security on a real broker: TLS, mutual TLS, SASL/SCRAM-SHA-512 and SASL/PLAIN.

Each test publishes through one listener of the secured broker (kafka_secure_support) and reads
the records back with kcat over the same listener, with the same TLS/SASL settings. Each
misconfiguration (wrong CA, expired or wrong-host certificate, bad password, missing client
certificate) must give one clear error naming the sink and the cause, and never a secret.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from notifier.config.sinks import KafkaSinkConfig
from notifier.errors import SinkError
from notifier.metrics import Metrics
from notifier.sinks.factory import build_sink
from notifier.sinks.kafka import KafkaSink
from tests.integration.kafka_secure_support import (
    PLAIN_PASSWORD,
    PLAIN_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    SecureKafka,
)
from tests.integration.kafka_support import make_event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def sink_config(kafka: SecureKafka, listener: str, topic: str, tmp_path: Path,
                **fields: Any) -> dict[str, Any]:
    """The sink section that reaches ``listener``, with secrets in the ``_file`` form."""
    cfg: dict[str, Any] = {"name": f"secure-{listener.lower()}", "type": "kafka",
                           "bootstrap_servers": kafka.addr[listener], "topic": topic,
                           "request_timeout": "5s", "security_protocol": "SSL",
                           "ssl_cafile": str(kafka.files["ca"])}
    if listener == "MTLS":
        cfg.update(ssl_certfile=str(kafka.files["client_cert"]),
                   ssl_keyfile=str(kafka.files["client_key"]))
    if listener == "SASL":
        secret = tmp_path / "kafka-password"
        secret.write_text(SCRAM_PASSWORD + "\n")
        cfg.update(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                   sasl_username=SCRAM_USER, sasl_password_file=str(secret))
    cfg.update(fields)
    return cfg


def make_sink(cfg: dict[str, Any], metrics: Metrics | None = None) -> KafkaSink:
    sink = build_sink(KafkaSinkConfig.model_validate(cfg), None,  # type: ignore[arg-type]
                      metrics or Metrics())
    assert isinstance(sink, KafkaSink)
    return sink


CASES = {
    "tls": ("SSL", {}),
    "mutual-tls": ("MTLS", {}),
    "sasl-scram-sha-512": ("SASL", {}),
    "sasl-plain": ("SASL", {"sasl_mechanism": "PLAIN", "sasl_username": PLAIN_USER,
                            "sasl_password": PLAIN_PASSWORD}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_publish_through_each_listener(secure_kafka: SecureKafka, kafka_topic: str,
                                             tmp_path: Path, case: str) -> None:
    listener, fields = CASES[case]
    if "sasl_password" in fields:
        fields = {**fields, "sasl_password_file": None}
    cfg = {k: v for k, v in sink_config(secure_kafka, listener, kafka_topic, tmp_path,
                                        **fields).items() if v is not None}
    events = [make_event(f"{case}-{i}") for i in range(5)]
    async with make_sink(cfg) as sink:
        assert sink.healthy(), case
        await sink.publish(events)

    if case == "sasl-scram-sha-512":  # kcat's librdkafka cannot do SCRAM with Kafka 4
        read = await asyncio.to_thread(secure_kafka.java_read, listener, kafka_topic,
                                       len(events))
    else:
        kcat_opts = {"user": PLAIN_USER, "mechanism": "PLAIN"} if case == "sasl-plain" else {}
        records = await asyncio.to_thread(secure_kafka.kcat_read, listener, kafka_topic,
                                          **kcat_opts)
        read = [(str(r["key"]), dict(zip(r["headers"][::2], r["headers"][1::2], strict=True)))
                for r in records]
    assert sorted(key for key, _ in read) == sorted(e.subject for e in events)
    assert {headers["ce_id"] for _, headers in read} == {e.id for e in events}


FAILURES = {
    # case: (listener, fields, words the error must contain)
    "wrong-ca": ("SSL", {"ssl_cafile": "other_ca"},
                 ["certificate was not accepted", "unable to get local issuer certificate",
                  "ssl_cafile"]),
    "expired-certificate": ("EXPIRED", {}, ["certificate was not accepted", "expired"]),
    "wrong-host": ("WRONGHOST", {}, ["certificate was not accepted", "mismatch",
                                     "ssl_check_hostname"]),
    "bad-password": ("SASL", {"sasl_password_file": None, "sasl_password": "not-the-pass-9"},
                     ["SASL SCRAM-SHA-512 authentication", repr(SCRAM_USER), "failed"]),
    "missing-client-certificate": ("MTLS", {"ssl_certfile": None, "ssl_keyfile": None},
                                   ["client certificate", "ssl_certfile"]),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_misconfiguration_gives_one_clear_error(
        secure_kafka: SecureKafka, kafka_topic: str, tmp_path: Path, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    listener, fields, words = FAILURES[case]
    fields = {k: (str(secure_kafka.files[v]) if k == "ssl_cafile" else v)
              for k, v in fields.items()}
    cfg = {k: v for k, v in sink_config(secure_kafka, listener, kafka_topic, tmp_path,
                                        **fields).items() if v is not None}
    name = cfg["name"]
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger="notifier"):
        async with make_sink(cfg, metrics) as sink:  # not fatal: retried in the background
            assert not sink.healthy()
            with pytest.raises(SinkError) as info:
                await sink.publish([make_event("never-1")])
            await asyncio.sleep(2)  # a few reconnection attempts: the same cause is not relogged
    assert info.value.sink == name
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    ours = [r for r in caplog.records if r.name.startswith("notifier")
            and r.levelno >= logging.WARNING]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert name in ours[0].getMessage()
    assert all(word in ours[0].getMessage() for word in words)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (SCRAM_PASSWORD, PLAIN_PASSWORD, "not-the-pass-9", "PRIVATE KEY"):
        assert secret not in logged
        assert secret not in message
    assert f'notifier_sink_up{{sink="{name}"}} 0.0' in metrics.render()[0].decode()


async def test_hostname_check_can_be_turned_off_explicitly(
        secure_kafka: SecureKafka, kafka_topic: str, tmp_path: Path) -> None:
    """ssl_check_hostname: false accepts a certificate for another host (the chain is still
    verified: the expired certificate stays refused)."""
    cfg = sink_config(secure_kafka, "WRONGHOST", kafka_topic, tmp_path, ssl_check_hostname=False)
    async with make_sink(cfg) as sink:
        assert sink.healthy()
        await sink.publish([make_event("opt-out-1")])
    records = await asyncio.to_thread(secure_kafka.kcat_read, "SSL", kafka_topic)
    assert [r["key"] for r in records] == ["opt-out-1"]

    expired = sink_config(secure_kafka, "EXPIRED", kafka_topic, tmp_path,
                          ssl_check_hostname=False)
    async with make_sink(expired) as sink:
        assert not sink.healthy()
