"""Webhook retry delays and Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

from notifier.core.retry_schedule import (
    DEFAULT_RETRY_AFTER,
    DEFAULT_RETRY_SCHEDULE,
    MAX_RETRY_AFTER,
    next_delay,
    parse_retry_after,
)

SCHEDULE = (5.0, 300.0, 1800.0)


@pytest.mark.parametrize(
    ("failed", "draw", "expected"),
    [
        (1, 0.5, 5.0),
        (2, 0.5, 300.0),
        (3, 0.5, 1800.0),
        (4, 0.5, None),  # schedule spent: dead letter
        (1, 0.0, 4.5),  # -10 %
        (2, 0.999999, pytest.approx(330.0, rel=1e-5)),  # +10 %
    ],
)
def test_next_delay(failed: int, draw: float, expected: float | None) -> None:
    assert next_delay(failed, SCHEDULE, draw=draw) == expected


def test_empty_schedule_dead_letters_after_one_attempt() -> None:
    assert next_delay(1, ()) is None


def test_default_schedule_spans_more_than_a_day() -> None:
    assert sum(DEFAULT_RETRY_SCHEDULE) > 86400
    assert next_delay(len(DEFAULT_RETRY_SCHEDULE) + 1, DEFAULT_RETRY_SCHEDULE) is None


def test_failed_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least"):
        next_delay(0, SCHEDULE)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("999999", MAX_RETRY_AFTER),
        (None, DEFAULT_RETRY_AFTER),
        ("", DEFAULT_RETRY_AFTER),
        ("soon", DEFAULT_RETRY_AFTER),
        ("nan", DEFAULT_RETRY_AFTER),
        (email.utils.formatdate(NOW + 42, usegmt=True), 42.0),
        (email.utils.formatdate(NOW - 42, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float) -> None:
    assert parse_retry_after(header, NOW) == expected
