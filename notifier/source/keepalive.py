"""A lean HTTP/1.1 client for the many calls of polling and draining (syncStatus, sync).

An idle pass checks every container with one small POST, and a drain fetches its pages one
POST each. Through aiohttp each of those costs a few hundred µs of Python (URL and header
objects, the request and response machinery, tracing and timer hooks), which at 10,000
containers is most of an idle pass, and a sizeable share of a large resync. ``KeepAlivePool``
does the same exchange on kept-alive connections, each an ``asyncio.Protocol``
(``source.keepalive_proto``): the request is one ``bytes`` write, and the response one
future the protocol completes once the head and the whole body are there (framed by their
length, in chunks, or by the end of the connection). It speaks only what these calls need:
no redirects (the status is returned as is), no cookies, no proxies (the process's aiohttp
session uses none either). It asks for gzip, as aiohttp does (a large sync page of JSON is
several times smaller on the wire), and decodes it within the body size limit; another content
encoding is a ``ProtocolError``.

Errors are ``notifier.errors`` types, as ``source.http.map_transport_errors`` gives for
aiohttp: a timeout, refused or dropped connection, TLS failure or malformed response is a
retriable ``TransportError`` (a gzip body that does not decode too); a body over the size limit
(decoded, for gzip) is a ``ProtocolError``. A kept-alive connection the server closed while it
was idle (its protocol saw the connection lost) is noticed when it is taken and replaced
before anything is sent. A request that got no answer at all is never sent again here (the
server may have counted it): the client's retry, which pays the budget again, decides.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from notifier.errors import ProtocolError, TransportError
from notifier.source.keepalive_proto import (
    BodyTooLarge,
    Connection,
    Cut,
    Dropped,
    UnsupportedEncoding,
    decoded,
)

IDLE_SECONDS = 15.0  # an idle connection older than this is closed, not reused (as aiohttp)
MAX_IDLE_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None


class KeepAlivePool:
    """Kept-alive connections to one origin (``base_url``'s scheme, host and port).

    Use as ``async with KeepAlivePool(url) as pool``; safe to share across tasks (each request
    takes a connection of its own: callers bound how many run at once).
    """

    def __init__(self, base_url: str, *, user_agent: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._user_agent = user_agent
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._closed = False
        # One timer for every exchange's deadline: set for the earliest, moved on when it
        # fires (a timer per request, set and cancelled, cost more than the rest of a scope).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def __aenter__(self) -> KeepAlivePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection (requests still running fail with a TransportError)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for c in conns:
            c.close()
        if conns:
            await asyncio.sleep(0)  # let the transports finish closing (connection_lost)

    def head(self, method: str, target: str, headers: dict[str, str], body_length: int) -> bytes:
        """The request line and headers for ``target`` (path and query), ready to send; the
        same for every call with the same headers, so callers may keep it."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 f"User-Agent: {self._user_agent}", "Accept-Encoding: gzip"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {body_length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes, *, endpoint: str, seconds: float,
                      max_body: int) -> Response:
        """Send ``head`` (from ``head()``) and ``body`` within ``seconds`` (connecting
        included); the response, or an error as the module docstring says."""
        if self._closed:
            raise TransportError("connection pool closed", endpoint=endpoint)
        status = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            conn = self._take()
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect(endpoint)
            if deadline < self._timer_at:  # else the pool's timer comes first anyway
                self._time_at(loop, deadline)
            try:
                answer, data = await conn.exchange(head + body, max_body, deadline)
            finally:
                self._put_back(conn)
            status = answer.status
            if answer.encoding is not None and answer.encoding != b"identity":
                data = decoded(data, answer.encoding, max_body)
            return Response(status, data, answer.retry_after)
        except TimeoutError:
            raise TransportError("request timed out", endpoint=endpoint) from None
        except Dropped:
            # Not sent again here: the server may have taken the request before it closed,
            # and every request must be paid for in the budget. The client's retry (which
            # acquires the budget again) decides.
            raise TransportError("server closed the connection without answering",
                                 endpoint=endpoint) from None
        except Cut as exc:
            raise TransportError(f"connection lost: {exc}", endpoint=endpoint) from None
        except BodyTooLarge as exc:
            raise _too_large(exc, max_body, endpoint, status) from None
        except UnsupportedEncoding as exc:
            raise ProtocolError(f"response Content-Encoding {exc.args[0]!r} is not supported "
                                "(gzip was asked for)", endpoint=endpoint,
                                status=status) from None
        except (OSError, ValueError) as exc:  # TLS and socket errors, Malformed
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}",
                                 endpoint=endpoint) from exc

    def _time_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._time_out, loop, when)
        self._timer_at = when

    def _time_out(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """Fail the exchanges whose deadline has come; set the timer for the next one."""
        self._timer, self._timer_at = None, math.inf
        later = math.inf
        for conn in list(self._busy):
            if conn.deadline <= now:
                conn.time_out()
            else:
                later = min(later, conn.deadline)
        if later < math.inf and not self._closed:
            self._time_at(loop, later)

    def _take(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the likeliest still open
            if conn.usable(now, IDLE_SECONDS):
                self._busy.add(conn)
                return conn
            conn.close()
        return None

    async def _connect(self, endpoint: str) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                Connection, self._host, self._port, ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None)
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (SSLError)
            raise TransportError(f"cannot connect to {self._host_header}: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}",
                                 endpoint=endpoint) from exc
        self._busy.add(conn)
        return conn

    def _put_back(self, conn: Connection) -> None:
        """After an exchange: kept for the next request only after a complete answer that
        allows it (a failed or abandoned one leaves the connection unusable)."""
        self._busy.discard(conn)
        if conn.reusable and not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()


def _too_large(exc: BodyTooLarge, max_body: int, endpoint: str, status: int) -> ProtocolError:
    if exc.length is not None:
        what = f"response body of {exc.length} bytes exceeds the limit of {max_body} bytes"
    elif exc.status == 0:  # decoded: the head's status is the caller's
        what = f"response body exceeds the limit of {max_body} bytes once decompressed"
    else:
        what = f"response body exceeds the limit of {max_body} bytes"
    return ProtocolError(f"{what} (source.max_response_bytes)", endpoint=endpoint,
                         status=exc.status or status)
