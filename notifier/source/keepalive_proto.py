"""One kept-alive HTTP/1.1 connection as an ``asyncio.Protocol``: the response parser.

``source.keepalive``'s pool writes a request on a ``Connection`` and awaits one future, which
the protocol completes when the whole response is there: the bytes ``data_received`` gets are
scanned for the head's end, and a body framed by its Content-Length (the usual answer) is
sliced out as soon as it is complete, so a small response costs one wake-up of the caller
rather than a read per line and per body. Chunked bodies (extensions and trailers skipped),
bodies running to the end of the connection, and interim 1xx answers are parsed here too.

The future ends with ``(head, body)`` or one of: ``Dropped`` (the connection ended before any
byte of an answer), ``Cut`` (it ended in the middle of one), ``Malformed`` (not HTTP/1.x as
read here, or a head over ``MAX_HEAD_BYTES``), ``BodyTooLarge`` (over the caller's limit), or
the ``OSError`` the transport lost the connection with. The pool maps them to
``notifier.errors`` types. A body is never decoded here (``decoded`` does gzip).
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from dataclasses import dataclass
from typing import cast

MAX_HEAD_BYTES = 64 * 1024  # status line and headers
_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"connection", b"retry-after",
                     b"content-encoding"))
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _TO_EOF = range(6)


class Dropped(Exception):
    """The connection gave no answer at all (closed by the server, perhaps while idle)."""


class Cut(Exception):
    """The connection ended in the middle of an answer."""


class Malformed(ValueError):
    """The response is not HTTP/1.x as this client reads it."""


class UnsupportedEncoding(Exception):
    """A Content-Encoding other than gzip (the only one asked for)."""


class BodyTooLarge(Exception):
    def __init__(self, status: int, length: int | None) -> None:
        super().__init__(status, length)
        self.status = status
        self.length = length  # as announced by Content-Length, or None when counted


@dataclass(slots=True)
class Head:
    """What this client reads from a response's status line and headers."""

    status: int
    keep_alive: bool
    length: int | None = None
    chunked: bool = False
    retry_after: str | None = None
    encoding: bytes | None = None  # Content-Encoding, lowercased

    @classmethod
    def parse(cls, block: bytes) -> Head:
        """From the bytes of the status line and headers (without the blank line)."""
        lines = block.split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Malformed("not an HTTP/1.x status line")
        status = int(parts[1])
        head = cls(status, keep_alive=parts[0] == b"HTTP/1.1")
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise Malformed("a response header without ':'")
            key = name.strip().lower()
            if key in _FIELDS:  # the few read here (most headers are not)
                head._field(key, value.strip())
        if head.chunked:
            head.length = None
        elif status in (204, 304):
            head.length = 0
        return head

    def _field(self, key: bytes, val: bytes) -> None:
        if key == b"content-length":
            if not val.isdigit() or (self.length is not None and self.length != int(val)):
                raise Malformed("bad Content-Length")
            self.length = int(val)
        elif key == b"transfer-encoding":
            self.chunked = val.lower().endswith(b"chunked")
        elif key == b"connection":
            tokens = {t.strip() for t in val.lower().split(b",")}
            self.keep_alive = (self.keep_alive or b"keep-alive" in tokens) and (
                b"close" not in tokens)
        elif key == b"retry-after":
            self.retry_after = val.decode("latin-1")
        else:
            self.encoding = val.lower()


class Connection(asyncio.Protocol):
    """A connection of the pool: at most one request at a time (``exchange``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = time.monotonic()
        self.reusable = False  # after a complete answer that allows it, nothing more sent
        self._lost = False
        self._waiter: asyncio.Future[tuple[Head, bytes]] | None = None
        self.deadline = math.inf  # of the exchange under way (the pool's timer enforces it)
        self._buf = bytearray()
        self._state = _HEAD
        self._head: Head | None = None
        self._need = 0  # _LENGTH: the body's length; _CHUNK_DATA: the chunk's
        self._chunks: list[bytes] = []
        self._size = 0
        self._max_body = 0
        self._answering = False  # a byte of this request's answer has come

    # -- the pool's side ------------------------------------------------------------------

    def usable(self, now: float, idle_seconds: float) -> bool:
        return (not self._lost and self.reusable and now - self.idle_since < idle_seconds
                and self.transport is not None and not self.transport.is_closing())

    def exchange(self, data: bytes, max_body: int, deadline: float
                 ) -> asyncio.Future[tuple[Head, bytes]]:
        """Send ``data`` (a whole request); the future of its answer's head and body (the
        pool calls ``time_out`` once ``deadline``, the loop's time, has passed)."""
        assert self.transport is not None
        assert self._waiter is None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.deadline = deadline
        self.reusable = False
        self._max_body = max_body
        self._state = _HEAD
        self._answering = False
        if self._lost:  # lost between its connection and this request: nothing is sent
            waiter.set_exception(Dropped())
            self._waiter = None
        else:
            self.transport.write(data)
        return waiter

    def time_out(self) -> None:
        """The exchange under way fails with ``TimeoutError``; the connection is closed."""
        self._fail(TimeoutError())

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (not checked with isinstance: another loop's transports, uvloop's, are not
        # subclasses of asyncio.Transport, though they have its methods)
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == _TO_EOF and exc is None:
            assert self._head is not None
            self._done(self._head, b"".join(self._chunks), keep_alive=False)
        elif not self._answering and (exc is None or isinstance(exc, ConnectionError)):
            self._fail(Dropped())
        elif exc is None or isinstance(exc, ConnectionError):
            self._fail(Cut(type(exc).__name__ if exc else "the connection closed mid-answer"))
        else:  # TLS and other socket errors
            self._fail(exc if isinstance(exc, OSError) else Cut(type(exc).__name__))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # unasked for, or after a timeout: never reused
            self.close()
            return
        self._answering = True
        if self._state == _HEAD and not self._buf:
            # The usual case: a whole answer framed by its length in one read, sliced out
            # without buffering it (any other case is parsed below from the start).
            end = data.find(b"\r\n\r\n")
            if 0 <= end <= MAX_HEAD_BYTES:
                try:
                    head: Head | None = Head.parse(data[:end])
                except Malformed:
                    head = None
                if (head is not None and head.length == len(data) - end - 4
                        and head.status >= 200 and head.length <= self._max_body):
                    self._done(head, data[end + 4:], keep_alive=head.keep_alive)
                    return
        self._buf += data
        try:
            self._parse()
        except (Malformed, BodyTooLarge) as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    # -- parsing --------------------------------------------------------------------------

    def _begin_body(self, head: Head) -> None:
        self._head = head
        self._chunks = []
        self._size = 0
        if head.chunked:
            self._state = _CHUNK_SIZE
        elif head.length is not None:
            if head.length > self._max_body:
                raise BodyTooLarge(head.status, head.length)
            self._state = _LENGTH
            self._need = head.length
        else:  # no framing: the body runs to the end of the connection
            self._state = _TO_EOF

    def _parse(self) -> None:
        """Parse on from the buffer until more bytes are needed or the answer is done."""
        while self._waiter is not None and self._step(self._buf):
            pass

    def _step(self, buf: bytearray) -> bool:
        """One step of the current state; False when it needs more bytes."""
        state = self._state
        if state == _HEAD:
            return self._step_head(buf)
        if state == _LENGTH:
            if len(buf) < self._need:
                return False
            assert self._head is not None
            keep = self._head.keep_alive and len(buf) == self._need
            body = bytes(buf) if keep else bytes(memoryview(buf)[:self._need])  # one copy
            self._done(self._head, body, keep_alive=keep)
            return False
        if state == _CHUNK_DATA:
            if len(buf) < self._need + 2:
                return False
            self._chunks.append(bytes(buf[:self._need]))
            del buf[:self._need + 2]  # the chunk and the CRLF after it
            self._state = _CHUNK_SIZE
            return True
        if state == _TO_EOF:
            self._count(len(buf))
            self._chunks.append(bytes(buf))
            del buf[:]
            return False
        return self._step_line(buf, state)

    def _step_head(self, buf: bytearray) -> bool:
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) <= MAX_HEAD_BYTES:
            return False
        if not 0 <= end <= MAX_HEAD_BYTES:
            raise Malformed("oversized response headers")
        head = Head.parse(bytes(buf[:end]))
        del buf[:end + 4]
        if not 100 <= head.status < 200:  # else an interim answer: the real one follows
            self._begin_body(head)
        return True

    def _step_line(self, buf: bytearray, state: int) -> bool:
        """A chunk's size line, or a line of the trailer after the last chunk."""
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise Malformed("an oversized chunk line")
            return False
        line = bytes(buf[:end]).rstrip(b"\r")
        del buf[:end + 1]
        if state == _TRAILER:
            if not line:  # the end of the answer
                assert self._head is not None
                self._done(self._head, b"".join(self._chunks),
                           keep_alive=self._head.keep_alive and not buf)
                return False
            return True  # a trailer: skipped
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Malformed("bad chunk size") from None
        if n == 0:
            self._state = _TRAILER
        else:
            self._count(n)
            self._need = n
            self._state = _CHUNK_DATA
        return True

    def _count(self, n: int) -> None:
        self._size += n
        if self._size > self._max_body:
            assert self._head is not None
            raise BodyTooLarge(self._head.status, None)

    def _done(self, head: Head, body: bytes, *, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        self.deadline = math.inf
        self._head = None
        self._chunks = []
        del self._buf[:]
        self._state = _HEAD
        self.reusable = keep_alive and not self._lost
        if waiter is not None and not waiter.done():
            waiter.set_result((head, body))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.deadline = math.inf
        self.reusable = False
        del self._buf[:]
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


def decoded(body: bytes, encoding: bytes, max_body: int) -> bytes:
    """A gzip body, decompressed no further than ``max_body`` bytes (a small body may expand
    a thousandfold): ``BodyTooLarge`` (status 0: the caller knows it) beyond, ``Malformed`` if
    it does not decode, ``UnsupportedEncoding`` for another encoding."""
    if encoding not in (b"gzip", b"x-gzip"):
        raise UnsupportedEncoding(encoding.decode("latin-1"))
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(body, max_body + 1)
    except zlib.error:
        raise Malformed("a gzip body that does not decompress") from None
    if len(out) > max_body:
        raise BodyTooLarge(0, None)
    if not inflate.eof:
        raise Malformed("a truncated gzip body")
    return out
