"""How the Kafka code (the sink, its security checks, cluster transactions) names a Kafka
failure and leaves no failed send future unread."""

from __future__ import annotations

import asyncio
from typing import Any


def describe(err: BaseException) -> str:
    """``ExceptionName: message`` (or the name alone), for logs and error messages."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def retrieve(fut: asyncio.Future[Any]) -> None:
    """A done callback marking a send future's failure as seen (else asyncio logs it at exit,
    with a traceback, for a failure already handled through another future)."""
    if not fut.cancelled():
        fut.exception()
