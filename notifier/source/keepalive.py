"""A lean HTTP/1.1 client for the many calls of polling and draining (syncStatus, sync).

An idle pass checks every container with one small POST, and a drain fetches its pages one
POST each. Through aiohttp each of those costs a few hundred µs of Python (URL and header
objects, the request and response machinery, tracing and timer hooks), which at 10,000
containers is most of an idle pass, and a sizeable share of a large resync. ``KeepAlivePool``
does the same exchange on kept-alive connections with asyncio streams: the request is one
``bytes`` write, the response a status line, a few headers and a body read by its length (or
its chunks). It speaks only what these calls need: no redirects (the status is returned as
is), no cookies, no proxies (the process's aiohttp session uses none either). It asks for
gzip, as aiohttp does (a large sync page of JSON is several times smaller on the wire), and
decodes it within the body size limit; another content encoding is a ``ProtocolError``.

Errors are ``notifier.errors`` types, as ``source.http.map_transport_errors`` gives for
aiohttp: a timeout, refused or dropped connection, TLS failure or malformed response is a
retriable ``TransportError`` (a gzip body that does not decode too); a body over the size limit
(decoded, for gzip) is a ``ProtocolError``. A kept-alive
connection the server closed while it was idle is noticed when it is taken and replaced
before anything is sent. A request that got no answer at all is never sent again here (the
server may have counted it): the client's retry, which pays the budget again, decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from notifier.errors import ProtocolError, TransportError

IDLE_SECONDS = 15.0  # an idle connection older than this is closed, not reused (as aiohttp)
MAX_HEAD_BYTES = 64 * 1024  # status line and headers
MAX_IDLE_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None


class _Dropped(Exception):
    """The connection gave no answer at all (closed by the server, perhaps while idle)."""


class _Malformed(ValueError):
    """The response is not HTTP/1.x as this client reads it."""


@dataclass(slots=True, eq=False)  # hashed by identity (the pool's set of busy ones)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float

    def usable(self, now: float) -> bool:
        return (now - self.idle_since < IDLE_SECONDS and not self.reader.at_eof()
                and not self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


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
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._closed = False

    async def __aenter__(self) -> KeepAlivePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection (requests still running fail with a TransportError)."""
        self._closed = True
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for c in conns:
            c.close()
        for c in conns:
            with contextlib.suppress(Exception):
                await c.writer.wait_closed()

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
        try:
            async with asyncio.timeout(seconds):
                conn = self._take() or await self._connect(endpoint)
                try:
                    return await self._exchange(conn, head + body, endpoint, max_body)
                except _Dropped:
                    # Not sent again here: the server may have taken the request before it
                    # closed, and every request must be paid for in the budget. The client's
                    # retry (which acquires the budget again) decides.
                    raise TransportError("server closed the connection without answering",
                                         endpoint=endpoint) from None
        except TimeoutError:
            raise TransportError("request timed out", endpoint=endpoint) from None

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the likeliest still open
            if conn.usable(now):
                self._busy.add(conn)
                return conn
            conn.close()
        return None

    async def _connect(self, endpoint: str) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, limit=MAX_HEAD_BYTES,
                server_hostname=self._host if self._ssl is not None else None)
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (SSLError)
            raise TransportError(f"cannot connect to {self._host_header}: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}",
                                 endpoint=endpoint) from exc
        conn = _Conn(reader, writer, time.monotonic())
        self._busy.add(conn)
        return conn

    async def _exchange(self, conn: _Conn, data: bytes, endpoint: str,
                        max_body: int) -> Response:
        """One request on ``conn``; the connection goes back to the pool only after a
        complete response that allows it."""
        reusable = False
        answered = False
        try:
            conn.writer.write(data)
            head = await _read_head(conn.reader)
            answered = True
            if head.length is not None and head.length > max_body:
                raise ProtocolError(f"response body of {head.length} bytes exceeds the limit of "
                                    f"{max_body} bytes (source.max_response_bytes)",
                                    endpoint=endpoint, status=head.status)
            if head.chunked:
                body = await _read_chunked(conn.reader, max_body, endpoint, head.status)
            elif head.length is not None:
                body = await conn.reader.readexactly(head.length)
            else:  # no framing: the body runs to the end of the connection
                body = await _read_to_eof(conn.reader, max_body, endpoint, head.status)
                head.keep_alive = False
            if head.encoding not in (None, b"identity"):
                body = _decoded(body, head.encoding, max_body, endpoint, head.status)
            reusable = head.keep_alive
            return Response(head.status, body, head.retry_after)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not answered and isinstance(exc, ConnectionError):
                raise _Dropped() from exc
            raise TransportError(f"connection lost: {type(exc).__name__}",
                                 endpoint=endpoint) from exc
        except (OSError, ValueError) as exc:  # TLS errors, _Malformed, a line over the limit
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}",
                                 endpoint=endpoint) from exc
        finally:
            self._busy.discard(conn)
            if reusable and not self._closed:
                conn.idle_since = time.monotonic()
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(conn)
                else:
                    conn.close()
            else:
                conn.close()


@dataclass(slots=True)
class _Head:
    """What this client reads from a response's status line and headers."""

    status: int
    keep_alive: bool
    length: int | None = None
    chunked: bool = False
    retry_after: str | None = None
    encoding: bytes | None = None  # Content-Encoding, lowercased

    @classmethod
    def parse(cls, block: bytes) -> _Head:
        """From the bytes up to and including the blank line."""
        lines = block.split(b"\r\n")
        version, status = _status_line(lines[0])
        head = cls(status, keep_alive=version == b"HTTP/1.1")
        for raw in lines[1:-2]:  # the block ends with two empty "lines"
            head.header(raw)
        if head.chunked:
            head.length = None
        elif status in (204, 304):
            head.length = 0
        return head

    def header(self, raw: bytes) -> None:
        name, sep, value = raw.partition(b":")
        if not sep:
            raise _Malformed("a response header without ':'")
        key = name.strip().lower()
        val = value.strip()
        if key == b"content-length":
            if not val.isdigit() or (self.length is not None and self.length != int(val)):
                raise _Malformed("bad Content-Length")
            self.length = int(val)
        elif key == b"transfer-encoding":
            self.chunked = val.lower().endswith(b"chunked")
        elif key == b"connection":
            tokens = {t.strip() for t in val.lower().split(b",")}
            self.keep_alive = (self.keep_alive or b"keep-alive" in tokens) and (
                b"close" not in tokens)
        elif key == b"retry-after":
            self.retry_after = val.decode("latin-1")
        elif key == b"content-encoding":
            self.encoding = val.lower()


def _decoded(body: bytes, encoding: bytes, max_body: int, endpoint: str, status: int) -> bytes:
    """A gzip body, decompressed no further than ``max_body`` bytes (a small body may expand
    a thousandfold)."""
    if encoding not in (b"gzip", b"x-gzip"):
        raise ProtocolError(f"response Content-Encoding {encoding.decode('latin-1')!r} is not "
                            "supported (gzip was asked for)", endpoint=endpoint, status=status)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(body, max_body + 1)
    except zlib.error:
        raise _Malformed("a gzip body that does not decompress") from None
    if len(out) > max_body:
        raise ProtocolError(f"response body exceeds the limit of {max_body} bytes once "
                            "decompressed (source.max_response_bytes)", endpoint=endpoint,
                            status=status)
    if not inflate.eof:
        raise _Malformed("a truncated gzip body")
    return out


async def _read_head(reader: asyncio.StreamReader) -> _Head:
    """The status line and headers (1xx answers skipped); ``_Dropped`` when the connection
    ends before the first byte of an answer."""
    first = True
    while True:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if first and not exc.partial:
                raise _Dropped() from exc
            raise
        except asyncio.LimitOverrunError:
            raise _Malformed("oversized response headers") from None
        head = _Head.parse(block)
        if not 100 <= head.status < 200:
            return head
        first = False  # an interim answer (100 Continue): the real one follows


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _Malformed("not an HTTP/1.x status line")
    return parts[0], int(parts[1])


async def _read_chunked(reader: asyncio.StreamReader, max_body: int, endpoint: str,
                        status: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Malformed("bad chunk size") from None
        if n == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        size += n
        if size > max_body:
            raise ProtocolError(f"response body exceeds the limit of {max_body} bytes "
                                f"(source.max_response_bytes)", endpoint=endpoint, status=status)
        chunks.append(await reader.readexactly(n))
        await reader.readexactly(2)  # the CRLF after the chunk


async def _read_to_eof(reader: asyncio.StreamReader, max_body: int, endpoint: str,
                       status: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(256 * 1024):
        size += len(chunk)
        if size > max_body:
            raise ProtocolError(f"response body exceeds the limit of {max_body} bytes "
                                f"(source.max_response_bytes)", endpoint=endpoint, status=status)
        chunks.append(chunk)
    return b"".join(chunks)
