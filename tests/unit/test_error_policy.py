"""What a failure means for a stream is data on its error class (read by on_failure)."""

from __future__ import annotations

import logging

import pytest

from notifier import errors as e


@pytest.mark.parametrize(
    ("error", "reason", "resync", "container_wide", "log_level"),
    [
        (e.BadRequestError("x"), "bad_token", True, False, logging.WARNING),
        (e.ForbiddenError("x"), "forbidden", False, True, logging.WARNING),
        (e.NotFoundError("x"), "gone", False, True, logging.WARNING),
        (e.UnauthorizedError("x"), "error", False, False, logging.WARNING),
        (e.ClientError("x"), "error", False, False, logging.WARNING),
        (e.ProtocolError("x"), "malformed_page", False, False, logging.WARNING),
        (e.ServerError("x"), None, False, False, logging.WARNING),
        (e.TransportError("x"), None, False, False, logging.WARNING),
        (e.RateLimitedError("x"), None, False, False, logging.WARNING),
        (e.CredentialUnavailableError("x"), None, False, False, logging.WARNING),
        (e.InvalidGrantError("x"), None, False, False, logging.WARNING),
        (e.SinkError("x"), None, False, False, logging.ERROR),
        (e.SinkConfigError("x"), None, False, False, logging.ERROR),
        (e.StateError("x"), None, False, False, logging.ERROR),
    ],
)
def test_failure_policy_per_error_class(error, reason, resync, container_wide, log_level):
    assert error.quarantine_reason == reason
    assert error.resync is resync
    assert error.container_wide is container_wide
    assert error.log_level == log_level


@pytest.mark.parametrize(
    ("error", "retriable", "needs_operator"),
    [
        (e.TransportError("x"), True, False),
        (e.ServerError("x"), True, False),
        (e.RateLimitedError("x"), True, False),
        (e.CredentialUnavailableError("x"), True, False),
        (e.SinkError("x"), True, False),
        (e.InvalidGrantError("x"), False, True),
        (e.ClientError("x"), False, False),
        (e.ProtocolError("x"), False, False),
        (e.SinkConfigError("x"), False, False),
    ],
)
def test_retriable_and_operator_flags(error, retriable, needs_operator):
    assert error.retriable is retriable
    assert error.needs_operator is needs_operator


@pytest.mark.parametrize(
    ("error", "pauses_work"),
    [
        (e.StateError("x", kind="busy"), True),
        (e.StateError("x"), True),
        (e.ServerError("x"), False),
        (e.SinkError("x"), False),
        (e.ProtocolError("x"), False),
        (e.CredentialUnavailableError("x"), False),
    ],
)
def test_only_a_state_store_failure_pauses_all_work(error, pauses_work):
    assert error.pauses_work is pauses_work
