"""How to reach a secured Kafka: TLS (CA, client certificate) and SASL, one model for every client.

The Kafka sink's section inherits these fields (they sit beside ``bootstrap_servers`` in the
YAML); any other Kafka client of the service reuses the same model and the same builder,
``notifier.sinks.kafka_security.client_security``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from notifier.config.base import ConfigModel, Problems
from notifier.config.types import NonEmpty, Secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SSL_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")


class KafkaSecurity(ConfigModel):
    """TLS and SASL settings of a Kafka client (all off by default: ``PLAINTEXT``).

    ``ssl_cafile`` is the CA bundle that signed the brokers' certificates (the system's trusted
    CAs when omitted, as for most managed services); ``ssl_certfile`` and ``ssl_keyfile`` (PEM)
    are the client certificate for mutual TLS, ``ssl_password`` the key's passphrase.
    ``ssl_check_hostname: false`` accepts a broker certificate issued for another host name
    (the chain is still verified): an explicit opt-out, for brokers reached by an address their
    certificate does not name.
    """

    _secret_fields = ("sasl_password", "ssl_password")

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: NonEmpty | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: Secret | None = None
    ssl_check_hostname: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def _enforce_sasl_settings(self) -> Problems:
        sasl = ("sasl_mechanism", "sasl_username", "sasl_password")
        if self.security_protocol.startswith("SASL_"):
            why = f"field required with security_protocol {self.security_protocol}"
            return [((f,), why) for f in sasl if getattr(self, f) is None]
        why = "needs security_protocol SASL_PLAINTEXT or SASL_SSL"
        return [((f,), why) for f in sasl if getattr(self, f) is not None]

    def _enforce_ssl_settings(self) -> Problems:
        if not self.uses_tls:
            why = "needs security_protocol SSL or SASL_SSL"
            problems: Problems = [((f,), why) for f in SSL_FIELDS if getattr(self, f) is not None]
            if not self.ssl_check_hostname:
                problems.append((("ssl_check_hostname",), why))
            return problems
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            missing = "ssl_keyfile" if self.ssl_keyfile is None else "ssl_certfile"
            return [((missing,), "a client certificate needs both ssl_certfile and ssl_keyfile")]
        if self.ssl_password is not None and self.ssl_keyfile is None:
            return [(("ssl_password",), "is the passphrase of ssl_keyfile, which is not set")]
        return []
