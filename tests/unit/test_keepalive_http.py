"""The lean kept-alive HTTP path (notifier.source.keepalive) against a raw scripted server.

The server answers each request with the bytes a test gives it, so the framings a real server
may use (length, chunks, to the end of the connection), interim answers, closes and malformed
answers are all exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from notifier.errors import ProtocolError, TransportError
from notifier.source.keepalive import KeepAlivePool

# What the server does with one request: bytes to answer (then keep the connection open),
# None to close the connection without answering, or a coroutine function for anything else.
Script = Callable[[int], bytes | None]


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class RawServer:
    script: Script
    requests: list[bytes] = field(default_factory=list)  # head + body of each request
    connections: int = 0
    delay: float = 0.0
    close_after: bool = False  # close each connection after its first answer
    piece: int = 0  # write each answer in pieces of this many bytes, a moment apart
    tls: ssl.SSLContext | None = None
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    def close_idle(self) -> None:
        """Close every connection (as a server does with kept-alive ones it finds idle)."""
        for w in self._writers:
            w.close()

    def send_unasked(self, data: bytes) -> None:
        """Write ``data`` on every connection, asked for or not (a 408 before a close)."""
        for w in self._writers:
            w.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = self.script(len(self.requests))
                if answer is None:
                    break
                for at in range(0, len(answer), self.piece or len(answer) or 1):
                    if at:
                        await asyncio.sleep(0.002)  # a read of its own, most likely
                    writer.write(answer[at:at + (self.piece or len(answer))])
                    await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    srv = RawServer(lambda n: ok())
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def pool(server: RawServer) -> AsyncIterator[KeepAlivePool]:
    async with KeepAlivePool(server.url + "/base", user_agent="test/1") as p:
        yield p


async def post(pool: KeepAlivePool, body: bytes = b"[1]", *, seconds: float = 5.0,
               max_body: int = 1 << 20) -> tuple[int, bytes, str | None]:
    head = pool.head("POST", "/base/x:y", {"Authorization": "Bearer t",
                                           "Content-Type": "application/json"}, len(body))
    resp = await pool.request(head, body, endpoint="syncStatus", seconds=seconds,
                              max_body=max_body)
    return resp.status, resp.body, resp.retry_after


async def test_requests_share_one_kept_alive_connection(server: RawServer,
                                                        pool: KeepAlivePool) -> None:
    for i in range(3):
        assert await post(pool, f"[{i}]".encode()) == (200, b'{"ok":true}', None)
    assert server.connections == 1
    first = server.requests[0]
    port = server.url.rsplit(":", 1)[1]
    assert first.startswith(b"POST /base/x:y HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{port}\r\n".encode() in first
    for header in (b"User-Agent: test/1", b"Authorization: Bearer t",
                   b"Content-Type: application/json", b"Content-Length: 3",
                   b"Accept-Encoding: gzip"):
        assert b"\r\n" + header + b"\r\n" in first
    assert first.endswith(b"\r\n\r\n[0]")


async def test_chunked_body_with_extensions_and_trailers(server: RawServer,
                                                         pool: KeepAlivePool) -> None:
    server.script = lambda n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert (await post(pool))[1] == b"abcdefg"
    assert (await post(pool))[1] == b"abcdefg"
    assert server.connections == 1  # still reusable after a chunked answer


@pytest.mark.parametrize("answer", [
    ok(extra="Connection: close\r\n"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",  # 1.0 closes unless told otherwise
])
async def test_a_closing_answer_is_not_reused(server: RawServer, pool: KeepAlivePool,
                                              answer: bytes) -> None:
    server.script = lambda n: answer
    await post(pool)
    await post(pool)
    assert server.connections == 2


async def test_a_body_without_framing_runs_to_the_close(server: RawServer,
                                                         pool: KeepAlivePool) -> None:
    server.script = lambda n: b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000
    server.close_after = True
    assert (await post(pool))[1] == b"x" * 5000
    assert (await post(pool))[1] == b"x" * 5000
    assert server.connections == 2


async def test_interim_answer_and_retry_after(server: RawServer, pool: KeepAlivePool) -> None:
    server.script = lambda n: (b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 429 Too Many\r\n"
                               b"Retry-After: 7\r\nContent-Length: 0\r\n\r\n")
    assert await post(pool) == (429, b"", "7")


async def test_a_connection_closed_while_idle_is_replaced_transparently(
        server: RawServer, pool: KeepAlivePool) -> None:
    await post(pool)
    server.close_idle()
    await asyncio.sleep(0.05)
    assert (await post(pool))[0] == 200
    assert server.connections == 2


async def test_a_reused_connection_dropped_unanswered_is_not_sent_again(
        server: RawServer, pool: KeepAlivePool) -> None:
    # The server saw the request: sending it again here would spend a request the budget
    # never granted. It is a retriable TransportError for the client's retry loop instead.
    server.script = lambda n: None if n == 2 else ok()  # 2nd request: close, no answer
    await post(pool)
    with pytest.raises(TransportError, match="without answering") as info:
        await post(pool)
    assert info.value.retriable
    assert len(server.requests) == 2
    assert (await post(pool))[0] == 200  # the next call goes on a new connection
    assert server.connections == 2


async def test_a_new_connection_dropped_unanswered_is_a_transport_error(
        server: RawServer, pool: KeepAlivePool) -> None:
    server.script = lambda n: None
    with pytest.raises(TransportError, match="without answering") as info:
        await post(pool)
    assert info.value.retriable
    assert info.value.endpoint == "syncStatus"
    assert len(server.requests) == 1


async def test_timeout_is_a_transport_error_and_the_connection_is_dropped(
        server: RawServer, pool: KeepAlivePool) -> None:
    server.delay = 0.5
    with pytest.raises(TransportError, match="timed out"):
        await post(pool, seconds=0.1)
    server.delay = 0.0
    await asyncio.sleep(0.6)  # the late answer arrives on the abandoned connection
    assert (await post(pool))[0] == 200
    assert server.connections == 2  # never read from the timed-out connection again


@pytest.mark.parametrize("answer", [
    ok(b"x" * 2000),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + (b"300\r\n" + b"x" * 768 + b"\r\n") * 2 + b"0\r\n\r\n",
])
async def test_a_body_over_the_limit_is_a_protocol_error(server: RawServer, pool: KeepAlivePool,
                                                         answer: bytes) -> None:
    server.script = lambda n: answer
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024 bytes") as info:
        await post(pool, max_body=1024)
    assert not info.value.retriable


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # then closed: truncated
    b"HTTP/1.1 200 OK\r\nContent-Le",  # closed in the middle of the headers
])
async def test_malformed_or_truncated_answers_are_transport_errors(
        server: RawServer, pool: KeepAlivePool, answer: bytes) -> None:
    server.script = lambda n: answer
    server.close_after = True
    with pytest.raises(TransportError) as info:
        await post(pool)
    assert info.value.retriable


async def test_refused_connection_and_closed_pool() -> None:
    srv = RawServer(lambda n: ok())
    await srv.start()
    url = srv.url
    await srv.stop()
    async with KeepAlivePool(url, user_agent="t") as pool:
        with pytest.raises(TransportError, match="cannot connect"):
            await post(pool)
    with pytest.raises(TransportError, match="closed"):
        await post(pool)


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        KeepAlivePool("ftp://example.com", user_agent="t")
    pool = KeepAlivePool("https://example.com", user_agent="t")
    assert pool.origin == "https://example.com"
    assert b"\r\nHost: example.com\r\n" in pool.head("POST", "/", {}, 0)


PAGE = b'{"relationships":[' + b",".join([b'{"id":"r","entities":[]}'] * 200) + b"]}"


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_gzip_body_is_decompressed(server: RawServer, pool: KeepAlivePool,
                                           chunked: bool) -> None:
    """As aiohttp, the client asks for gzip (a large page is several times smaller on the
    wire) and hands back the JSON; the connection stays reusable."""
    packed = gzip.compress(PAGE)
    assert len(packed) * 5 < len(PAGE)
    if chunked:
        half = len(packed) // 2
        answer = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked"
                  b"\r\n\r\n" + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                                          for c in (packed[:half], packed[half:]))
                  + b"0\r\n\r\n")
    else:
        answer = ok(packed, extra="Content-Encoding: gzip\r\n")
    server.script = lambda n: answer
    assert await post(pool) == (200, PAGE, None)
    assert await post(pool) == (200, PAGE, None)
    assert server.connections == 1


async def test_a_gzip_body_over_the_limit_once_decompressed_is_a_protocol_error(
        server: RawServer, pool: KeepAlivePool) -> None:
    bomb = gzip.compress(b"0" * 1_000_000)  # about a kilobyte on the wire
    server.script = lambda n: ok(bomb, extra="Content-Encoding: gzip\r\n")
    with pytest.raises(ProtocolError, match="exceeds the limit of 65536 bytes once "
                                            "decompressed") as info:
        await post(pool, max_body=65_536)
    assert not info.value.retriable


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(PAGE, mtime=0)[:-20]],
                         ids=["garbage", "truncated"])
async def test_a_gzip_body_that_does_not_decode_is_a_transport_error(
        server: RawServer, pool: KeepAlivePool, body: bytes) -> None:
    server.script = lambda n: ok(body, extra="Content-Encoding: gzip\r\n")
    with pytest.raises(TransportError, match="gzip body"):
        await post(pool)


async def test_an_encoding_not_asked_for_is_a_protocol_error(server: RawServer,
                                                             pool: KeepAlivePool) -> None:
    server.script = lambda n: ok(b"\x1b\x00", extra="Content-Encoding: br\r\n")
    with pytest.raises(ProtocolError, match="Content-Encoding 'br' is not supported"):
        await post(pool)
    server.script = lambda n: ok(extra="Content-Encoding: identity\r\n")
    assert (await post(pool))[1] == b'{"ok":true}'
