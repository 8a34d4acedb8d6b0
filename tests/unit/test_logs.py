"""Logging: JSON lines with context, readable text on terminals, secrets masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from notifier.logs import redact, setup_logging


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_message_and_context() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    log = logging.getLogger("notifier.test")
    log.debug("hidden at INFO")
    log.info(
        "page synced: %d relationships",
        42,
        extra={"subscription": "project-a", "container": "c-1", "sink": "events"},
    )
    log.warning("no context here")
    first, second = lines(out)
    assert first["level"] == "INFO"
    assert first["logger"] == "notifier.test"
    assert first["msg"] == "page synced: 42 relationships"
    assert (first["subscription"], first["container"], first["sink"]) == (
        "project-a",
        "c-1",
        "events",
    )
    assert "credential" not in first
    assert str(first["ts"]).endswith("+00:00")
    assert second["msg"] == "no context here"
    assert "subscription" not in second


def test_json_includes_exception_text() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("notifier.test").exception("sync failed", extra={"credential": "main"})
    (entry,) = lines(out)
    assert entry["msg"] == "sync failed"
    assert entry["credential"] == "main"
    assert "RuntimeError: boom" in str(entry["exc"])
    assert "Traceback" in str(entry["exc"])


def test_auto_picks_text_on_a_terminal_and_json_otherwise() -> None:
    tty = FakeTty()
    setup_logging("INFO", "auto", stream=tty)
    logging.getLogger("notifier.test").info("hello", extra={"sink": "hooks"})
    text = tty.getvalue()
    assert "INFO" in text
    assert "notifier.test: hello [sink=hooks]" in text
    assert not text.startswith("{")

    pipe = io.StringIO()
    setup_logging("INFO", "auto", stream=pipe)
    logging.getLogger("notifier.test").info("hello")
    assert lines(pipe)[0]["msg"] == "hello"
    # the second call replaced the first handler instead of stacking a second one
    assert tty.getvalue() == text


def test_level_is_applied() -> None:
    out = io.StringIO()
    setup_logging("warning", "json", stream=out)
    logging.getLogger("notifier.test").info("quiet")
    logging.getLogger("notifier.test").error("loud")
    assert [e["msg"] for e in lines(out)] == ["loud"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        setup_logging("INFO", "xml", stream=io.StringIO())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi", "Authorization"),
        ("sent Bearer s3cr3tT0ken to upstream", "s3cr3tT0ken", "Bearer ***"),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl seen", "eyJzdWIiOiJ4In0", "seen"),
        ("secret is whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqr", "whsec_***"),
        ("body grant_type=refresh_token&refresh_token=RT-123&x=1", "RT-123", "&x=1"),
        ('{"refresh_token": "RT-456", "expires_in": 3600}', "RT-456", '"expires_in": 3600'),
        ("{'client_secret': 'cs-789'}", "cs-789", "client_secret"),
        ("access_token=AT-1; path=/", "AT-1", "path=/"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA", "Authorization"),
    ],
)
def test_redact_masks_secrets(text: str, secret: str, kept: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert kept in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "text",
    [
        "syncToken=abc123 moreData=true",
        "Basic configuration loaded",
        "grant_type=refresh_token",
        "container 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10 synced",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_masks_arguments_exceptions_and_context() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    log = logging.getLogger("notifier.test")
    log.info("refreshing with %s", "refresh_token=RT-SECRET", extra={"sink": "Bearer HOOK-SECRET"})
    try:
        raise ValueError("server said: client_secret=CS-SECRET")
    except ValueError:
        log.exception("token refresh failed")
    raw = out.getvalue()
    for secret in ("RT-SECRET", "HOOK-SECRET", "CS-SECRET"):
        assert secret not in raw
    first, second = lines(out)
    assert first["msg"] == "refreshing with refresh_token=***"
    assert first["sink"] == "Bearer ***"
    assert "client_secret=***" in str(second["exc"])


def test_text_format_masks_too() -> None:
    tty = FakeTty()
    setup_logging("INFO", "text", stream=tty)
    logging.getLogger("notifier.test").warning("webhook secret whsec_abcDEF123 rejected")
    assert "whsec_abcDEF123" not in tty.getvalue()
    assert "whsec_***" in tty.getvalue()
