"""aiokafka's TLS/SASL arguments from a ``KafkaSecurity`` model, and why a connection failed.

``client_security`` is the one place that turns the config into ``security_protocol``,
``ssl_context`` and ``sasl_*`` keyword arguments (for producers, consumers and admin clients).
``explain_connect_failure`` finds the cause aiokafka only logs ("Unable to bootstrap from ..."
hides it): it opens one connection itself and names what went wrong, such as a certificate
signed by another CA, an expired or wrong-host certificate, a missing client certificate or
rejected SASL credentials. Neither ever puts a password or key into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed

from notifier.config.kafka_security import KafkaSecurity
from notifier.sinks.kafka_errors import describe


class _ConnectErrorFilter(logging.Filter):
    """Drops aiokafka's "Unable connect to ..." error, logged at every reconnection attempt:
    the Kafka clients of this service report a failed connection themselves, with its cause,
    once per distinct cause."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to")


_CONNECT_ERRORS = _ConnectErrorFilter()


def quiet_aiokafka_connect_errors() -> None:
    """Install the filter on aiokafka's logger (idempotent)."""
    logging.getLogger("aiokafka").addFilter(_CONNECT_ERRORS)  # a filter is added only once


class KafkaSecurityError(ValueError):
    """The TLS files cannot be used (missing, unreadable, not PEM, wrong passphrase)."""


def client_security(sec: KafkaSecurity) -> dict[str, Any]:
    """aiokafka keyword arguments for ``sec`` (KafkaSecurityError if a TLS file is unusable)."""
    opts: dict[str, Any] = {"security_protocol": sec.security_protocol}
    if sec.sasl_mechanism is not None and sec.sasl_password is not None:
        opts.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                    sasl_plain_password=sec.sasl_password.get_secret_value())
    if sec.uses_tls:
        opts["ssl_context"] = ssl_context(sec)
    return opts


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: the broker certificate verified against ``ssl_cafile`` (or the
    system's CAs), its host name checked unless ``ssl_check_hostname`` is false, and the client
    certificate loaded for mutual TLS."""
    what = "ssl_cafile"
    try:
        context = ssl.create_default_context(
            cafile=None if sec.ssl_cafile is None else str(sec.ssl_cafile))
        context.check_hostname = sec.ssl_check_hostname
        if sec.ssl_certfile is not None:
            what = "ssl_certfile/ssl_keyfile"
            password = None if sec.ssl_password is None else sec.ssl_password.get_secret_value()
            context.load_cert_chain(
                str(sec.ssl_certfile),
                None if sec.ssl_keyfile is None else str(sec.ssl_keyfile), password)
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise KafkaSecurityError(f"cannot use {what}: {_ssl_reason(err)}") from None
    return context


async def explain_connect_failure(servers: list[str], opts: dict[str, Any], *,
                                  per_server: float) -> str | None:
    """Why no connection to ``servers`` with ``opts`` (``client_security`` plus aiokafka client
    options) can be made, from one attempt per server, or None if one succeeds."""
    reasons = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            reason = await asyncio.wait_for(_try(host.strip("[]"), int(port), opts), per_server)
        except TimeoutError:
            reason = f"no answer within {per_server:.0f}s"
        if reason is None:
            return None
        reasons.append(f"{server}: {reason}")
    return "; ".join(dict.fromkeys(reasons)) or None


async def _try(host: str, port: int, opts: dict[str, Any]) -> str | None:
    keys = ("client_id", "request_timeout_ms", "ssl_context", "security_protocol",
            "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    try:
        conn = await create_conn(host, port, **{k: opts[k] for k in keys if k in opts})
    except ssl.SSLCertVerificationError as err:
        return _certificate_problem(err)
    except ssl.SSLError as err:
        return _tls_problem(err)
    except SaslAuthenticationFailed as err:
        return (f"SASL {opts.get('sasl_mechanism')} authentication as "
                f"{opts.get('sasl_plain_username')!r} failed (wrong sasl_username or "
                f"sasl_password?): {_broker_message(err)}")
    except KafkaConnectionError as err:
        # A TLS 1.3 server that wants a client certificate closes the connection after the
        # handshake: its alert is only seen by reading, which aiokafka reports as "closed".
        context = opts.get("ssl_context")
        if isinstance(context, ssl.SSLContext):
            alert = await _tls_alert(host, port, context)
            if alert is not None:
                return alert
        return describe(err)
    except (KafkaError, OSError) as err:
        return describe(err)
    conn.close()
    return None


async def _tls_alert(host: str, port: int, context: ssl.SSLContext) -> str | None:
    """The TLS problem a plain handshake plus a short read reveals, if any."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as err:
        return _tls_problem(err)
    except OSError:
        return None
    try:
        await asyncio.wait_for(reader.read(1), 2.0)
    except ssl.SSLError as err:
        return _tls_problem(err)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


def _certificate_problem(err: ssl.SSLCertVerificationError) -> str:
    detail = err.verify_message or _ssl_reason(err)
    hint = ""
    if "issuer" in detail or "self-signed" in detail or "self signed" in detail:
        hint = " (is ssl_cafile the CA that signed the broker's certificate?)"
    elif "mismatch" in detail or "not valid for" in detail:
        hint = (" (the certificate names another host; connect by a name it lists, or set "
                "ssl_check_hostname: false)")
    elif "expired" in detail or "not yet valid" in detail:
        hint = " (the broker's certificate must be renewed)"
    return f"TLS: the broker's certificate was not accepted: {detail}{hint}"


def _tls_problem(err: ssl.SSLError) -> str:
    reason = _ssl_reason(err)
    if "CERTIFICATE" in str(getattr(err, "reason", "")).upper() and "ALERT" in reason.upper():
        return (f"TLS: the broker did not accept our client certificate ({reason}): it requires "
                "one from a CA it trusts (ssl_certfile and ssl_keyfile)")
    return f"TLS handshake failed: {reason}"


def _ssl_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    text = str(err)
    if isinstance(err, ssl.SSLError) and reason:
        return str(reason).replace("_", " ").lower()
    return text.split(" (_ssl.c:", maxsplit=1)[0]


def _broker_message(err: KafkaError) -> str:
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text
