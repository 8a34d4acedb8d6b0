"""One signed webhook call over aiohttp, mapped to an ``Outcome`` the dispatcher can act on.

The aiohttp boundary: no aiohttp exception leaves this module. Redirects are not followed (a
3xx is a failure), response bodies are read only up to ``max_response_bytes``, and outcome
details never hold the URL, a secret, a configured header value or a signature.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp
from yarl import URL

from notifier.config import WebhookSinkConfig
from notifier.errors import SinkConfigError
from notifier.sinks.signing import InvalidSecretError, SigningKey, parse_secret, webhook_headers

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
USER_AGENT = "notifier-webhooks/1"
# Headers the sink sets itself; configured extra headers cannot replace them.
_RESERVED = frozenset({
    "content-type", "content-length", "host", "transfer-encoding", "connection",
    "webhook-id", "webhook-timestamp", "webhook-signature",
})
_DETAIL_CHARS = 200

OutcomeKind = Literal["ok", "gone", "rate_limited", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call came to; ``detail`` is safe to log and to store as ``last_error``."""

    kind: OutcomeKind
    status: int | None
    detail: str
    retry_after: str | None = None


def check_url(sink: str, url: str, allow_insecure_http: bool) -> None:
    """Refuse anything but https (or http when allowed) with a host; never echo the URL."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        raise SinkConfigError("webhook url is not a valid URL", sink=sink) from None
    if parsed.scheme == "http" and not allow_insecure_http:
        raise SinkConfigError(
            "webhook url must use https (set allow_insecure_http: true to allow http)", sink=sink
        )
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SinkConfigError("webhook url must be an absolute https URL", sink=sink)


def signing_keys(sink: str, cfg: WebhookSinkConfig) -> list[SigningKey]:
    """The keys of every configured secret (all of them sign: rotation)."""
    secrets = cfg.signing_secrets
    if not secrets:
        raise SinkConfigError("a webhook sink needs a secret (whsec_...)", sink=sink)
    keys = []
    for index, secret in enumerate(secrets):
        try:
            keys.append(parse_secret(secret.get_secret_value()))
        except InvalidSecretError as exc:
            raise SinkConfigError(f"webhook secret #{index + 1}: {exc}", sink=sink) from None
    return keys


def _snippet(body: bytes) -> str:
    text = re.sub(r"\s+", " ", body.decode("utf-8", "replace")).strip()
    return text[:_DETAIL_CHARS] + ("..." if len(text) > _DETAIL_CHARS else "")


class WebhookClient:
    """Signs and POSTs bodies to one endpoint; one aiohttp session for the sink's lifetime."""

    def __init__(
        self, sink: str, cfg: WebhookSinkConfig, keys: Sequence[SigningKey],
        clock: Callable[[], float],
    ) -> None:
        self._sink = sink
        self._url = URL(str(cfg.url))
        self._allow_http = bool(cfg.allow_insecure_http)
        self._keys = list(keys)
        self._clock = clock
        self._timeout = float(cfg.timeout)
        self._max_body = int(cfg.max_response_bytes)
        self._concurrency = max(1, int(cfg.max_concurrency))
        extra = cfg.header_values
        dropped = sorted(k for k in extra if k.lower() in _RESERVED)
        if dropped:
            log.warning("webhook sink %s: ignoring configured headers it sets itself: %s",
                        sink, ", ".join(dropped))
        self._extra = {k: v for k, v in extra.items() if k.lower() not in _RESERVED}
        # Header values are secrets (often an Authorization): redacted from response snippets,
        # longest first so that no part of a longer value survives a shorter one's replacement.
        self._secret_values = sorted(
            {v.encode("latin-1") for v in self._extra.values() if len(v) >= 4},
            key=len, reverse=True)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        check_url(self._sink, str(self._url), self._allow_http)  # again, at run time
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, body: bytes, msg_id: str, *, batch: bool) -> Outcome:
        """One signed POST; every failure comes back as an Outcome, never as an exception."""
        if self._session is None:
            raise RuntimeError("WebhookClient.post before open()")
        headers = dict(self._extra)
        headers["Content-Type"] = BATCH_CONTENT_TYPE if batch else CONTENT_TYPE
        headers.update(webhook_headers(self._keys, msg_id, self._clock(), body))
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                text = await self._read_limited(resp)
        except TimeoutError:
            return Outcome("failed", None, f"timeout after {self._timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            return Outcome("failed", None, f"connection failed ({type(exc.os_error).__name__})")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # The type only: a message could quote a header value (a secret).
            return Outcome("failed", None, f"request failed ({type(exc).__name__})")
        return self._classify(status, retry_after, self._redact(text))

    def _redact(self, text: bytes) -> bytes:
        """The response body without any configured header value (a receiver may echo one)."""
        for value in self._secret_values:
            text = text.replace(value, b"[redacted]")
        return text

    @staticmethod
    def _classify(status: int, retry_after: str | None, text: bytes) -> Outcome:
        if 200 <= status < 300:
            return Outcome("ok", status, f"HTTP {status}")
        if status == 410:
            return Outcome("gone", status, "HTTP 410 Gone")
        if status == 429:
            return Outcome("rate_limited", status, "HTTP 429", retry_after)
        if 300 <= status < 400:
            return Outcome("failed", status, f"HTTP {status} (redirects are not followed)")
        snippet = _snippet(text)
        return Outcome("failed", status, f"HTTP {status}" + (f": {snippet}" if snippet else ""))

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        """At most ``max_response_bytes`` of the body; the rest is never read."""
        chunks: list[bytes] = []
        left = self._max_body
        while left > 0:
            chunk = await resp.content.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
