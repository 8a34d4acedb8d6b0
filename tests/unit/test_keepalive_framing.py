"""The kept-alive HTTP path's parser (notifier.source.keepalive_proto) on every framing, with
answers arriving whole or a few bytes at a time, large pages, TLS, and the connection states a
server leaves behind (bytes nobody asked for, answers past their request's deadline).

Same raw scripted server as test_keepalive_http.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from collections.abc import AsyncIterator

import pytest
import trustme

from notifier.errors import ProtocolError, TransportError
from notifier.source.keepalive import KeepAlivePool
from notifier.source.keepalive_proto import MAX_HEAD_BYTES
from tests.unit import test_keepalive_http as shared
from tests.unit.test_keepalive_http import RawServer, ok, post

server, pool = shared.server, shared.pool  # that module's fixtures, found here by their names


PAGE = b'{"relationships":[' + b",".join([b'{"id":"r","entities":[]}'] * 300) + b"]}"


def chunked(body: bytes, size: int, extra: str = "", trailer: bytes = b"") -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return (f"HTTP/1.1 200 OK\r\n{extra}Transfer-Encoding: chunked\r\n\r\n".encode()
            + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
            + b"0\r\n" + trailer + b"\r\n")


def framings(page: bytes) -> dict[str, tuple[bytes, bytes, bool]]:
    """(answer, the body the client must hand back, whether the connection is kept)."""
    return {
        "length": (ok(page), page, True),
        "length-empty": (ok(b""), b"", True),
        "no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        "chunked-trailers": (chunked(page, 100, trailer=b"X-Checksum: 1\r\nX-More: 2\r\n"),
                             page, True),
        "gzip-length": (ok(gzip.compress(page), "Content-Encoding: gzip\r\n"), page, True),
        "gzip-chunked": (chunked(gzip.compress(page), 50, "Content-Encoding: gzip\r\n"), page,
                         True),
        "continue-then-length": (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(page), page, True),
        "two-interims-then-chunked": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing"
                                      b"\r\n\r\n" + chunked(page, 4096), page, True),
        "http10-keep-alive": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                              b"Content-Length: 2\r\n\r\n{}", b"{}", True),
        "http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", b"{}", False),
        "close": (ok(page, "Connection: close\r\n"), page, False),
        "header-case-and-spaces": (b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh :  2 \r\n\r\n{}", b"{}",
                                   True),
    }


@pytest.mark.parametrize("piece", [0, 7], ids=["whole", "trickled"])
@pytest.mark.parametrize("name", sorted(framings(b"")))
async def test_every_framing_whole_or_trickled(server: RawServer, pool: KeepAlivePool,
                                               name: str, piece: int) -> None:
    """Whole: the usual single read. Trickled: 7 bytes a read, so the head, the chunk lines
    and the bodies are each split somewhere (a small page keeps it quick)."""
    answer, body, kept = framings(PAGE[:400] if piece else PAGE)[name]
    server.script = lambda n: answer
    server.piece = piece
    server.close_after = not kept  # the server closes as its answer says
    for _ in range(2):
        status, got, _ = await post(pool, seconds=30.0)
        assert (status, got) == (204 if name == "no-content" else 200, body)
    assert server.connections == (1 if kept else 2)


@pytest.mark.parametrize("piece", [0, 5], ids=["whole", "trickled"])
async def test_a_body_to_the_end_of_the_connection(server: RawServer, pool: KeepAlivePool,
                                                  piece: int) -> None:
    server.script = lambda n: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + PAGE[:300]
    server.piece = piece
    server.close_after = True
    assert (await post(pool, seconds=30.0))[1] == PAGE[:300]
    assert (await post(pool, seconds=30.0))[1] == PAGE[:300]
    assert server.connections == 2


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_large_page_of_several_megabytes(server: RawServer, pool: KeepAlivePool,
                                                 framing: str) -> None:
    big = b'{"relationships":[' + b",".join(
        b'{"id":"%08d","entities":[{"domain":"d","type":"t","id":"x"}]}' % i
        for i in range(60_000)) + b"]}"
    assert len(big) > 3_000_000
    server.script = lambda n: ok(big) if framing == "length" else chunked(big, 65_536)
    for _ in range(2):
        assert (await post(pool, seconds=60.0, max_body=8 << 20))[1] == big
    assert server.connections == 1


async def test_an_oversized_head_is_a_transport_error(server: RawServer,
                                                      pool: KeepAlivePool) -> None:
    huge = "X-Filler: " + "a" * (MAX_HEAD_BYTES + 10) + "\r\n"
    server.script = lambda n: ok(extra=huge)
    with pytest.raises(TransportError, match="oversized response headers"):
        await post(pool)
    server.piece = 4096  # the same when it arrives in pieces, before its end is seen
    with pytest.raises(TransportError, match="oversized response headers"):
        await post(pool)


@pytest.mark.parametrize("answer", [
    ok(PAGE)[:-10],  # a Content-Length body cut short
    chunked(PAGE, 1000)[:-40],  # in the middle of the chunks
    chunked(PAGE, 1000)[:-2],  # before the end of the trailer
    b"HTTP/1.1 100 Continue\r\n\r\n",  # an interim answer, then nothing
])
@pytest.mark.parametrize("piece", [0, 29], ids=["whole", "trickled"])
async def test_an_answer_cut_short_is_a_transport_error(server: RawServer, pool: KeepAlivePool,
                                                        answer: bytes, piece: int) -> None:
    server.script = lambda n: answer[:400] + answer[-60:] if piece else answer
    server.piece = piece
    server.close_after = True
    with pytest.raises(TransportError, match="connection lost") as info:
        await post(pool)
    assert info.value.retriable
    server.script = lambda n: ok()
    assert (await post(pool))[0] == 200  # on a new connection
    assert server.connections == 2


async def test_a_chunked_body_over_the_limit_trickled(server: RawServer,
                                                      pool: KeepAlivePool) -> None:
    server.script = lambda n: chunked(PAGE, 500)
    server.piece = 300
    with pytest.raises(ProtocolError, match="exceeds the limit of 2000 bytes"):
        await post(pool, max_body=2000)
    server.script = lambda n: b"HTTP/1.1 200 OK\r\n\r\n" + PAGE  # to the end of the connection
    server.close_after = True
    with pytest.raises(ProtocolError, match="exceeds the limit of 2000 bytes"):
        await post(pool, max_body=2000)


async def test_bytes_after_the_answer_or_while_idle_retire_the_connection(
        server: RawServer, pool: KeepAlivePool) -> None:
    server.script = lambda n: ok() + ok() if n == 1 else ok()  # one answer too many
    assert (await post(pool))[0] == 200
    assert (await post(pool))[0] == 200
    assert server.connections == 2  # not read from again: the extra answer is no one's
    server.send_unasked(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
    await asyncio.sleep(0.05)
    assert (await post(pool))[0] == 200
    assert server.connections == 3


async def test_each_request_times_out_at_its_own_deadline(server: RawServer,
                                                          pool: KeepAlivePool) -> None:
    """One timer serves every exchange: a slow request after a quick one still fails on time,
    and a quick one meanwhile is not failed by the slow one's deadline."""
    assert (await post(pool, seconds=0.3))[0] == 200  # sets the timer, answered well before
    await asyncio.sleep(0.1)
    server.delay = 5.0  # the next request is answered late (it is read now, then waits)
    started = time.monotonic()
    slow = asyncio.create_task(post(pool, seconds=0.3))
    await asyncio.sleep(0.05)
    server.delay = 0.0
    assert (await post(pool, seconds=10.0))[0] == 200  # a second connection, answered
    with pytest.raises(TransportError, match="timed out"):
        await slow
    assert 0.25 < time.monotonic() - started < 3.0


@pytest.fixture
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture
async def tls_server(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[RawServer]:
    srv = RawServer(lambda n: ok(PAGE), tls=tls[0])
    await srv.start()
    yield srv
    await srv.stop()


async def test_tls(tls_server: RawServer, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    async with KeepAlivePool(tls_server.url, user_agent="t", ssl_context=tls[1]) as pool:
        for _ in range(2):
            assert (await post(pool))[1] == PAGE
        tls_server.piece = 100
        assert (await post(pool))[1] == PAGE
    assert tls_server.connections == 1
    async with KeepAlivePool(tls_server.url, user_agent="t") as untrusting:  # the system CAs
        with pytest.raises(TransportError, match=r"cannot connect.*SSL"):
            await post(untrusting)


async def test_an_interim_answer_read_on_its_own_is_not_the_answer(
        server: RawServer, pool: KeepAlivePool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n"  # framed, yet not final
    server.script = lambda n: interim + ok(b"x" * (len(interim) * 3))
    server.piece = len(interim)  # the interim answer is a read of its own
    assert await post(pool) == (200, b"x" * (len(interim) * 3), None)
