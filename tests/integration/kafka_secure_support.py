"""A real Kafka broker with TLS and SASL listeners, for the security tests.

A test CA is made at run time (``trustme``); the broker (scripts/kafka.sh, its own ports) gets
one PLAINTEXT listener (inter-broker traffic and readiness checks) and these, all on 127.0.0.1:

====================  ==========  ==========================================================
listener              protocol    what it proves
====================  ==========  ==========================================================
``SSL``               SSL         TLS with a certificate for 127.0.0.1/localhost
``MTLS``              SSL         mutual TLS: a client certificate from the CA is required
``SASL``              SASL_SSL    SCRAM-SHA-512 (credentials added at storage format time)
                                  and PLAIN (credentials in the listener's JAAS config)
``WRONGHOST``         SSL         a valid certificate, but for another host name
``EXPIRED``           SSL         a certificate for the right host that expired yesterday
====================  ==========  ==========================================================

The broker takes PEM files (``ssl.keystore.type=PEM``), so nothing needs keytool. The files
(CA, client certificate and key, another CA nobody trusts) are in ``SecureKafka.files``.

Run it by hand: ``python -m tests.integration.kafka_secure_support start DIR`` prints the
listeners and the files; ``... stop DIR`` stops it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tests.integration.kafka_support import (
    NOTIFIER_CACHE,
    ROOT,
    KafkaBroker,
    free_port,
    kcat_available,
    require_script,
    skip_or_fail,
)

SCRAM_USER, SCRAM_PASSWORD = "notifier-scram", "scram-s3cret_1"
PLAIN_USER, PLAIN_PASSWORD = "notifier-plain", "plain-secret-2"
LISTENERS = ("SSL", "MTLS", "SASL", "WRONGHOST", "EXPIRED")
KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.3.1")  # scripts/kafka.sh's default
PROTOCOL = {"SSL": "SSL", "MTLS": "SSL", "SASL": "SASL_SSL", "WRONGHOST": "SSL",
            "EXPIRED": "SSL"}


def _pkcs8(cert: trustme.LeafCert) -> bytes:
    """The leaf's key as unencrypted PKCS#8 PEM (what Kafka's PEM keystore reads)."""
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class SecureKafka:
    """A running secured broker: ``addr[listener]`` is its host:port, ``files`` the PEMs."""

    broker: KafkaBroker
    addr: dict[str, str]
    files: dict[str, Path] = field(default_factory=dict)

    def kcat_args(self, listener: str, *, user: str = SCRAM_USER,
                  mechanism: str = "SCRAM-SHA-512") -> list[str]:
        """kcat (librdkafka) options that reach ``listener`` with the same TLS/SASL settings."""
        args = ["-b", self.addr[listener], "-X", f"security.protocol={PROTOCOL[listener]}",
                "-X", f"ssl.ca.location={self.files['ca']}"]
        if listener == "MTLS":
            args += ["-X", f"ssl.certificate.location={self.files['client_cert']}",
                     "-X", f"ssl.key.location={self.files['client_key']}"]
        if listener == "SASL":
            password = SCRAM_PASSWORD if user == SCRAM_USER else PLAIN_PASSWORD
            args += ["-X", f"sasl.mechanisms={mechanism}", "-X", f"sasl.username={user}",
                     "-X", f"sasl.password={password}"]
        return args

    def java_read(self, listener: str, topic: str, count: int, *,
                  timeout: float = 120.0) -> list[tuple[str, dict[str, str]]]:
        """``count`` records of ``topic`` read through ``listener`` by Kafka's own console consumer
        (Java), as (key, headers). For SCRAM: kcat's librdkafka (Debian: 2.0) cannot log in to a
        Kafka 4 broker with SCRAM (fixed in librdkafka 2.6.1, confluentinc/librdkafka#4895)."""
        props = self.files["ca"].parent / f"consumer-{listener.lower()}.properties"
        lines = [f"security.protocol={PROTOCOL[listener]}", "ssl.truststore.type=PEM",
                 f"ssl.truststore.location={self.files['ca']}"]
        if listener == "SASL":
            lines += ["sasl.mechanism=SCRAM-SHA-512",
                      "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                      f'required username="{SCRAM_USER}" password="{SCRAM_PASSWORD}";']
        props.write_text("\n".join(lines) + "\n")
        props.chmod(0o600)
        java = os.environ.get("JAVA") or (
            str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME")
            else shutil.which("java") or "java")  # as scripts/kafka.sh finds it
        libs = NOTIFIER_CACHE / f"kafka-{KAFKA_VERSION}" / "libs" / "*"
        proc = subprocess.run(
            [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", str(libs),
             f"-Dlog4j2.configurationFile={ROOT / 'scripts/kafka/tools-log4j2.properties'}",
             "org.apache.kafka.tools.consumer.ConsoleConsumer",
             "--bootstrap-server", self.addr[listener], "--topic", topic, "--from-beginning",
             "--max-messages", str(count), "--timeout-ms", "30000",
             "--command-config", str(props),
             "--property", "print.key=true", "--property", "print.headers=true"],
            capture_output=True, text=True, timeout=timeout, check=False)
        out = []
        for line in proc.stdout.splitlines():
            if line.count("\t") < 2:  # "Processed a total of N messages"
                continue
            headers, key, _value = line.split("\t", 2)
            pairs = (h.split(":", 1) for h in headers.split(","))
            out.append((key, {k: v for k, v in pairs}))
        if len(out) != count:
            raise RuntimeError(f"console consumer via {listener} read {len(out)} of {count} "
                               f"records ({proc.returncode}): {proc.stderr[-2000:]}")
        return out

    def kcat_read(self, listener: str, topic: str, *, timeout: float = 60.0,
                  **kw: str) -> list[dict[str, object]]:
        """Every record of ``topic``, read back through ``listener`` by kcat (JSON envelopes)."""
        proc = subprocess.run(
            ["kcat", "-C", *self.kcat_args(listener, **kw), "-t", topic, "-o", "beginning",
             "-e", "-J", "-q"],
            capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kcat via {listener} failed ({proc.returncode}): "
                               f"{proc.stderr[-2000:]}")
        out = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        out.sort(key=lambda r: (int(str(r["partition"])), int(str(r["offset"]))))
        return out


def make_pki(directory: Path) -> dict[str, Path]:
    """The test PKI in ``directory``: CA, server keystores (good, wrong host, expired), a client
    certificate and key, and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    rsa = trustme.KeyType.RSA
    ca = trustme.CA(key_type=rsa, organization_name="notifier test CA")
    other = trustme.CA(key_type=rsa, organization_name="some other CA")
    now = dt.datetime.now(dt.UTC)
    leaves = {
        "server": ca.issue_cert("127.0.0.1", "localhost", key_type=rsa),
        "wronghost": ca.issue_cert("kafka.elsewhere.example", key_type=rsa),
        "expired": ca.issue_cert("127.0.0.1", "localhost", key_type=rsa,
                                 not_before=now - dt.timedelta(days=30),
                                 not_after=now - dt.timedelta(days=1)),
        "client": ca.issue_cert("notifier-client", common_name="notifier-client", key_type=rsa),
    }
    files = {"ca": directory / "ca.pem", "other_ca": directory / "other-ca.pem",
             "client_cert": directory / "client.pem", "client_key": directory / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other.cert_pem.write_to_path(str(files["other_ca"]))
    for name in ("server", "wronghost", "expired"):
        path = directory / f"{name}-keystore.pem"
        leaf = leaves[name]
        path.write_bytes(_pkcs8(leaf) + b"".join(b.bytes() for b in leaf.cert_chain_pems))
        files[f"{name}_keystore"] = path
    leaves["client"].cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    files["client_key"].write_bytes(_pkcs8(leaves["client"]))
    for path in files.values():
        path.chmod(0o600)
    return files


def broker_config(ports: dict[str, int], base: int, files: dict[str, Path]) -> str:
    """server.properties lines (appended to scripts/kafka/server.properties.template)."""
    names = ["PLAINTEXT", *LISTENERS]
    addr = {"PLAINTEXT": base, **ports}
    listeners = ",".join(f"{n}://127.0.0.1:{addr[n]}" for n in names)
    proto = ",".join(f"{n}:{PROTOCOL.get(n, 'PLAINTEXT')}" for n in names)
    lines = [
        f"listeners={listeners},CONTROLLER://127.0.0.1:@CONTROLLER_PORT@",
        f"advertised.listeners={listeners}",
        f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{proto}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={files['server_keystore']}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={files['ca']}",
        "ssl.endpoint.identification.algorithm=https",
        f"listener.name.wronghost.ssl.keystore.location={files['wronghost_keystore']}",
        f"listener.name.expired.ssl.keystore.location={files['expired_keystore']}",
        "listener.name.mtls.ssl.client.auth=required",
        "listener.name.sasl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        "listener.name.sasl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{PLAIN_USER}="{PLAIN_PASSWORD}";',
    ]
    return "\n".join(lines)


def start_secure_kafka(directory: Path) -> SecureKafka:
    """Make the PKI in ``directory`` and start a broker with every listener (fresh storage)."""
    files = make_pki(directory)
    base = free_port()
    ports = {name: free_port() for name in LISTENERS}
    config = broker_config(ports, base, files)
    broker = KafkaBroker.on_port(
        base, KAFKA_EXTRA_CONFIG=config,
        KAFKA_FORMAT_ARGS=f"--add-scram 'SCRAM-SHA-512=[name={SCRAM_USER},"
                          f"password={SCRAM_PASSWORD}]'")
    broker.start()
    (directory / "broker.json").write_text(json.dumps({"port": base, "ports": ports}))
    return SecureKafka(broker, {n: f"127.0.0.1:{p}" for n, p in ports.items()}, files)


def stop_secure_kafka(kafka: SecureKafka) -> None:
    kafka.broker.stop()
    kafka.broker.remove_data()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A private broker with the SSL, MTLS, SASL, WRONGHOST and EXPIRED listeners."""
    require_script("cannot start the secured Kafka broker")
    if not kcat_available():
        skip_or_fail("kcat not found (scripts/install-tools.sh installs it)")
    kafka = start_secure_kafka(tmp_path_factory.mktemp("kafka-pki"))
    try:
        yield kafka
    finally:
        stop_secure_kafka(kafka)


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.integration.kafka_secure_support start|stop DIR",
              file=sys.stderr)
        return 2
    directory = Path(argv[1]).resolve()
    if argv[0] == "start":
        kafka = start_secure_kafka(directory)
        print(json.dumps({"listeners": kafka.addr,
                          "files": {k: str(v) for k, v in kafka.files.items()},
                          "scram": [SCRAM_USER, "see tests/integration/kafka_secure_support.py"]},
                         indent=2))
        return 0
    port = json.loads((directory / "broker.json").read_text())["port"]
    broker = KafkaBroker.on_port(port)
    broker.stop()
    broker.remove_data()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NOTIFIER_CACHE", str(Path.home() / ".cache" / "notifier"))
    sys.exit(_main(sys.argv[1:]))
