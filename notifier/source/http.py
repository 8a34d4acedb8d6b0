"""The process's HTTP plumbing: one shared aiohttp session, and aiohttp errors mapped to ours.

Every credential's client and token provider share one ``ClientSession`` (one connection pool
per process, bounded by the connector's ``limit``). ``map_transport_errors`` is the boundary
where aiohttp and asyncio exceptions become ``notifier.errors`` types, the way httpx's
``map_httpcore_exceptions`` does, so nothing from aiohttp leaks into the core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from notifier.errors import ProtocolError, TransportError, UpstreamError

USER_AGENT = "notifier/0.1 (+aiohttp)"
DEFAULT_CONNECTIONS = 64
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_CHUNK = 256 * 1024


def create_session(
    *,
    limit: int = DEFAULT_CONNECTIONS,
    limit_per_host: int = 0,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    user_agent: str = USER_AGENT,
) -> aiohttp.ClientSession:
    """The one ``ClientSession`` of the process; use it as ``async with create_session() as s``.

    ``limit`` bounds the connections of the whole process (every credential together);
    ``limit_per_host`` of 0 means no separate per-host bound. ``timeout`` is the default total
    time per request; clients pass their own per call. Must be called inside a running loop.
    """
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": user_agent},
        raise_for_status=False,
    )


def as_client_timeout(value: aiohttp.ClientTimeout | float) -> aiohttp.ClientTimeout:
    """A per-request timeout from seconds (total) or an explicit ``ClientTimeout``."""
    if isinstance(value, aiohttp.ClientTimeout):
        return value
    if value <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {value}")
    return aiohttp.ClientTimeout(total=float(value))


@contextmanager
def map_transport_errors(endpoint: str) -> Iterator[None]:
    """Turn aiohttp/asyncio failures inside the block into ``notifier.errors`` types.

    Timeouts, resets, refused connections, DNS and TLS failures and truncated bodies become a
    retriable ``TransportError``; an unusable URL a non-retriable ``UpstreamError``. Messages
    carry the exception class and aiohttp's text (host and port, never headers or tokens).
    """
    try:
        yield
    except TimeoutError:  # = asyncio.TimeoutError (3.11+), and aiohttp's ServerTimeoutError
        raise TransportError("request timed out", endpoint=endpoint) from None
    except aiohttp.InvalidURL as exc:
        raise UpstreamError(f"invalid URL ({type(exc).__name__})", endpoint=endpoint) from None
    except aiohttp.ClientError as exc:
        raise TransportError(_describe(exc), endpoint=endpoint) from exc
    except OSError as exc:
        raise TransportError(_describe(exc), endpoint=endpoint) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name



async def read_capped(resp: aiohttp.ClientResponse, limit: int, endpoint: str) -> bytes:
    """The whole body of ``resp``, or ``ProtocolError`` as soon as it exceeds ``limit`` bytes
    (announced by Content-Length or counted while reading): an endless or huge answer must not
    take the process's memory."""
    announced = resp.content_length
    if announced is not None and announced > limit:
        raise ProtocolError(f"response body of {announced} bytes exceeds the limit of "
                            f"{limit} bytes (source.max_response_bytes)", endpoint=endpoint,
                            status=resp.status)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"response body exceeds the limit of {limit} bytes "
                                f"(source.max_response_bytes)", endpoint=endpoint,
                                status=resp.status)
        chunks.append(chunk)
    return b"".join(chunks)
