"""Kafka security on a real broker: TLS, mutual TLS, SASL/SCRAM-SHA-512 and SASL/PLAIN.

Each test publishes through one listener of the secured broker (kafka_secure_support) and reads
the records back with kcat over the same listener, with the same TLS/SASL settings. Each
misconfiguration (wrong CA, expired or wrong-host certificate, bad password, missing client
certificate) must give one clear error naming the sink and the cause, and never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
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

# One worker runs them all under pytest-xdist (--dist loadgroup): the secured broker is a
# session fixture, so every worker that ran one of them would start a broker of its own.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180),
              pytest.mark.xdist_group("secure_kafka")]


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


A = "3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
B = "4d2e3f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60"


@pytest.mark.timeout(240)
async def test_service_keeps_running_with_a_rejected_sink_and_resumes_when_fixed(
        secure_kafka: SecureKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A SASL sink with a wrong password: the service runs on, the subscription publishing to
    another (TLS) Kafka sink keeps publishing, nothing is checkpointed for the rejected sink's
    subscription; with the password file fixed, a restart delivers everything."""
    from notifier.app import App
    from notifier.config import config_from_data
    from notifier.simulator import Simulator
    from tests.integration.kafka_support import read_topic
    from tests.integration.main_job_support import base_config, sim_config

    password = tmp_path / "secure-kafka-password"
    password.write_text("wrong-password-7\n")
    secure_topic, tls_topic = f"sasl-{tmp_path.name[-8:]}", f"tls-{tmp_path.name[-8:]}"
    sinks = [
        {**sink_config(secure_kafka, "SASL", secure_topic, tmp_path), "name": "secure",
         "sasl_password_file": str(password)},
        {**sink_config(secure_kafka, "SSL", tls_topic, tmp_path), "name": "tls"},
    ]
    subs = [{"name": "rejected", "credential": "sim", "container_id": A, "sinks": ["secure"]},
            {"name": "fine", "credential": "sim", "container_id": B, "sinks": ["tls"]}]
    plain = secure_kafka.broker.bootstrap  # the broker's PLAINTEXT listener, for reading back
    async with Simulator(sim_config([A, B], relationships=4)) as sim:
        cfg = base_config(tmp_path, sim.url, subs, sinks=sinks)
        app = App(config_from_data(cfg))
        with caplog.at_level(logging.WARNING, logger="notifier"):
            task = asyncio.create_task(app.run())
            try:

                async def tls_events() -> int:
                    try:
                        return len(await read_topic(plain, tls_topic))
                    except AssertionError:  # topic not created yet
                        return 0

                deadline = asyncio.get_running_loop().time() + 60
                while await tls_events() < 4:
                    assert asyncio.get_running_loop().time() < deadline, "tls sink idle"
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)  # several more checks of the rejected stream
                assert not task.done(), "the service stopped"
                tokens = {st.subscription: st.sync_token for st in await app.store.list_streams()}
                assert tokens["fine"] is not None
                assert tokens["rejected"] is None, "checkpointed past a page the sink refused"
            finally:
                app.request_stop()
                assert await asyncio.wait_for(task, 60) == 0
        about = [r.getMessage() for r in caplog.records if "secure" in r.getMessage()]
        assert about, "nothing said about the rejected sink"
        for line in about:
            assert "SASL SCRAM-SHA-512 authentication" in line, line
        # aiokafka's own line per reconnection attempt is left out: the sink says it once.
        assert not [r for r in caplog.records if r.getMessage().startswith("Unable connect")]
        assert "wrong-password-7" not in caplog.text

        password.write_text(SCRAM_PASSWORD + "\n")  # fixed: a restart delivers
        app = App(config_from_data(cfg))
        task = asyncio.create_task(app.run())
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                with contextlib.suppress(AssertionError):
                    if len(await read_topic(plain, secure_topic)) >= 4:
                        break
                assert asyncio.get_running_loop().time() < deadline, "nothing delivered"
                await asyncio.sleep(0.5)
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 60) == 0
    keys = sorted(r.key.decode() for r in await read_topic(plain, secure_topic))
    assert keys == sorted(sim.state.ground_truth(A)["live"])
