"""Logging setup: readable text on a terminal, JSON lines in production, secrets masked.

Context travels in ``extra``: ``log.info("page synced", extra={"subscription": name, "sink":
sink})``; both formats print the context fields that are present. ``RedactFilter`` is a safety
net that masks bearer tokens, JWTs, webhook secrets and OAuth form fields in every record; the
code must not log them in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

import orjson

LogFormat = Literal["auto", "text", "json"]

# Fields callers pass through ``extra=`` that both formatters print when present.
CONTEXT_FIELDS = (
    "subscription",
    "container",
    "sink",
    "credential",
    "endpoint",
    "status",
    "event_id",
)

MASK = "***"

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values, whatever the scheme, and bearer tokens anywhere
    (
        re.compile(r"""(\bAuthorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+""", re.IGNORECASE),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE), rf"\1 {MASK}"),
    # JWTs (APS access tokens are JWTs) wherever they appear
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    # Standard Webhooks signing secrets
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), f"whsec_{MASK}"),
    # OAuth fields in forms, query strings, JSON or reprs: refresh_token=..., "client_secret": "..."
    (
        re.compile(
            r"""(\b(?:refresh_token|access_token|id_token|client_secret|password)\b["']?\s*[:=]\s*"""
            r"""["']?)[^"'&\s,;}]+"""
        ),
        rf"\1{MASK}",
    ),
)

_HANDLER_NAME = "notifier"


def redact(text: str) -> str:
    """Mask anything in ``text`` that looks like a credential."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record's message, traceback and string context with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for field in CONTEXT_FIELDS:
            current = record.__dict__.get(field)
            if isinstance(current, str):
                record.__dict__[field] = redact(current)
        return True


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {f: record.__dict__[f] for f in CONTEXT_FIELDS if record.__dict__.get(f) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [key=value ...]`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = _context(record)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return line


def setup_logging(
    level: str = "INFO", fmt: LogFormat = "auto", *, stream: TextIO | None = None
) -> None:
    """Send every log record to ``stream`` (stderr) as text or JSON lines, secrets masked.

    ``auto`` picks text when the stream is a terminal and JSON otherwise. Calling it again
    replaces the handler it installed, so tests and the CLI can reconfigure freely.
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if out.isatty() else "json"
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (use auto, text or json)")
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp logs one INFO line per request; scrapes and probes would drown everything else.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
