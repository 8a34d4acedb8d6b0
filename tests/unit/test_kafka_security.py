"""The Kafka security model and the aiokafka arguments built from it (no broker needed), and the
sink's guards around aiokafka internals and topic creation defaults."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
import trustme

from notifier.config.kafka_security import KafkaSecurity
from notifier.config.sinks import KafkaSinkConfig
from notifier.metrics import Metrics
from notifier.sinks.kafka import KafkaSink
from notifier.sinks.kafka_abandon import missing_internals
from notifier.sinks.kafka_security import KafkaSecurityError, client_security
from notifier.sinks.kafka_topic import default_replication


def test_plaintext_has_no_tls_or_sasl() -> None:
    assert client_security(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_with_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    sec = KafkaSecurity.model_validate({
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc", "sasl_password_file": str(tmp_path / "pw")})
    opts = client_security(sec)
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("svc", "s3cret")
    context = opts["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    # No ssl_cafile: the system's CAs (managed services), host names checked.
    assert context.check_hostname is True
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert "s3cret" not in repr(sec)


def test_mutual_tls_with_encrypted_key_and_hostname_opt_out(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("notifier-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass")))
    (tmp_path / "key-pass").write_text("key-pass\n")
    fields = {"security_protocol": "SSL", "ssl_cafile": str(tmp_path / "ca.pem"),
              "ssl_certfile": str(tmp_path / "client.pem"),
              "ssl_keyfile": str(tmp_path / "client.key"),
              "ssl_password_file": str(tmp_path / "key-pass"), "ssl_check_hostname": False}
    context = client_security(KafkaSecurity.model_validate(fields))["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED  # the chain is still verified

    (tmp_path / "key-pass").write_text("wrong\n")
    with pytest.raises(KafkaSecurityError) as info:
        client_security(KafkaSecurity.model_validate(fields))
    assert str(info.value).startswith("cannot use ssl_certfile/ssl_keyfile: ")
    assert "wrong" not in str(info.value)


def test_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    sec = KafkaSecurity(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(KafkaSecurityError, match=r"cannot use ssl_cafile: .*No such file"):
        client_security(sec)


def test_sink_turns_an_unusable_tls_file_into_a_config_error(tmp_path: Path) -> None:
    from notifier.errors import SinkConfigError

    cfg = KafkaSinkConfig(name="secured", bootstrap_servers=["127.0.0.1:9093"], topic="t",
                          security_protocol="SSL", ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(SinkConfigError) as info:
        KafkaSink(cfg, Metrics())
    assert info.value.sink == "secured"
    assert "ssl_cafile" in str(info.value)


@pytest.mark.parametrize(("brokers", "want"), [(0, 1), (1, 1), (2, 2), (3, 3), (7, 3)])
def test_default_replication_is_min_3_brokers(brokers: int, want: int) -> None:
    assert default_replication(brokers) == want


def test_missing_aiokafka_internals_are_reported_loudly(
        caplog: pytest.LogCaptureFixture) -> None:
    """A producer without the internals the abandon workaround needs: one error log line and
    notifier_sink_kafka_internals_missing 1 (not a silent no-op)."""
    metrics = Metrics()
    sink = KafkaSink(KafkaSinkConfig(name="events", bootstrap_servers=["127.0.0.1:9"],
                                     topic="t"), metrics)
    changed = SimpleNamespace(_sender=SimpleNamespace(close=None),
                              _message_accumulator=SimpleNamespace(_batches={}))
    assert missing_internals(changed) == [  # type: ignore[arg-type]
        "Sender.close", "MessageAccumulator._pending_batches", "MessageAccumulator.fail_all"]
    with caplog.at_level(logging.ERROR, logger="notifier.sinks.kafka"):
        assert sink._check_internals(changed) is False  # type: ignore[arg-type]
        assert sink._check_internals(changed) is False  # type: ignore[arg-type]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1
    assert "kafka sink events: aiokafka" in errors[0]
    assert "Sender.close" in errors[0]
    text = metrics.render()[0].decode()
    assert 'notifier_sink_kafka_internals_missing{sink="events"} 1.0' in text


def test_installed_aiokafka_has_the_internals() -> None:
    """The pinned aiokafka (pyproject.toml) has everything the workaround touches."""
    from aiokafka import AIOKafkaProducer

    async def check() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
        try:
            return missing_internals(producer)
        finally:
            await producer.stop()

    import asyncio

    assert asyncio.run(check()) == []
