"""Backoff schedule and Retry-After parsing, from tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from notifier.core.backoff import backoff_ceiling, backoff_delay, parse_retry_after

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "rand", "expected"),
    [
        (0, 0.5, 30.0, 0.0, 0.0),  # full jitter reaches down to zero
        (0, 0.5, 30.0, 0.5, 0.25),
        (1, 0.5, 30.0, 0.5, 0.5),
        (2, 0.5, 30.0, 0.5, 1.0),
        (3, 0.5, 30.0, 0.999, 3.996),
        (5, 0.5, 30.0, 0.5, 8.0),  # ceiling 16
        (6, 0.5, 30.0, 0.5, 15.0),  # ceiling 32 -> capped at 30
        (10, 0.5, 30.0, 0.5, 15.0),
        (10_000, 0.5, 30.0, 0.5, 15.0),  # no float overflow for absurd attempts
        (3, 1.0, 5.0, 0.0, 0.0),
        (0, 0.0, 5.0, 0.7, 0.0),
    ],
)
def test_backoff_delay_table(attempt, base, cap, rand, expected):
    assert backoff_delay(attempt, base=base, cap=cap, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (64, 10.0), (10**6, 10.0)],
)
def test_backoff_ceiling_doubles_until_cap(attempt, ceiling):
    assert backoff_ceiling(attempt, base=1.0, cap=10.0) == ceiling


def test_backoff_delay_stays_below_the_ceiling_for_every_draw():
    for attempt in range(12):
        ceiling = backoff_ceiling(attempt, base=0.25, cap=20.0)
        for step in range(100):
            rand = step / 100
            delay = backoff_delay(attempt, base=0.25, cap=20.0, rand=rand)
            assert 0.0 <= delay < ceiling or (delay == 0.0 == ceiling)


@pytest.mark.parametrize(
    ("attempt", "rand"), [(-1, 0.5), (0, 1.0), (0, -0.1), (0, 1.5)],
)
def test_backoff_delay_rejects_bad_input(attempt, rand):
    with pytest.raises(ValueError):  # noqa: PT011
        backoff_delay(attempt, base=1.0, cap=2.0, rand=rand)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("25", 25.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("2.5", 2.5),  # not RFC delta-seconds, but harmless to honour
        ("-3", 0.0),  # negative -> wait 0
        ("+4", 4.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 60.0),  # RFC 850
        ("Wed Oct 21 07:28:00 2015", 60.0),  # asctime (no zone: UTC)
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past -> 0
        ("Wed, 21 Oct 2015 09:28:30 +0200", 90.0),  # offsets honoured
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("1_000", None),
        ("1e3", None),
        ("nan", None),
        ("inf", None),
        ("0x10", None),
        ("25 seconds", None),
        ("9" * 400, None),  # overflows a float
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after_table(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_with_naive_and_offset_now():
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=naive) == 60.0
    shifted = NOW.astimezone(timezone(timedelta(hours=5)))
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=shifted) == 60.0
