"""When is a credential dead? Table tests of the pure judgement behind ``auth status``."""

from __future__ import annotations

import pytest

from notifier.cli.output import format_table
from notifier.core.credential_health import REFRESH_TOKEN_LIFETIME, Recorded, assess

NOW = 1_800_000_000.0
DAY = 86400.0
FP = "fp-seed"


@pytest.mark.parametrize(
    ("has_seed", "recorded", "state", "detail"),
    [
        (False, None, "dead", "no refresh token"),
        (True, None, "seeded", "not used yet"),
        (True, Recorded("fp-old", NOW - DAY, NOW - DAY), "seeded", "new seed"),
        (False, Recorded(FP, NOW - DAY, NOW - DAY), "ok", "refreshing"),
        (True, Recorded(FP, NOW - 14 * DAY, NOW - 14 * DAY), "ok", "refreshing"),
        (True, Recorded(FP, NOW - 15 * DAY, NOW - 15 * DAY), "dead", "expired"),
        (True, Recorded(FP, NOW - DAY, NOW - DAY, "invalid_grant", NOW - 60), "dead",
         "invalid_grant"),
        (True, Recorded(FP, NOW - DAY, NOW - DAY, "rejected", NOW - 60), "dead",
         "client id/secret"),
        # a success after the failure (re-seeded by auth login): alive again
        (True, Recorded(FP, NOW - 30, NOW - 30, "invalid_grant", NOW - 60), "ok", "refreshing"),
        # transient failures do not kill it
        (True, Recorded(FP, NOW - DAY, NOW - DAY, "unavailable", NOW - 60), "ok", "retrying"),
        (True, Recorded(None, None, None, "invalid_grant", NOW - 60), "dead", "invalid_grant"),
    ],
)
def test_assess(has_seed: bool, recorded: Recorded | None, state: str, detail: str) -> None:
    health = assess("main", static=False, has_seed=has_seed, seed_fingerprint=FP,
                    recorded=recorded, now=NOW)
    assert health.state == state
    assert detail in health.detail
    assert health.dead == (state == "dead")
    if recorded is not None and recorded.seed_fingerprint == FP:
        assert recorded.token_issued_at is not None
        assert health.token_expires_at == recorded.token_issued_at + REFRESH_TOKEN_LIFETIME


def test_static_tokens_are_never_dead() -> None:
    health = assess("s", static=True, has_seed=False, seed_fingerprint=FP, recorded=None,
                    now=NOW)
    assert (health.state, health.dead) == ("static", False)


def test_table_columns_stay_aligned_with_long_names() -> None:
    lines = format_table(["NAME", "N", "STATE"],
                         [["short", 1, "ok"], ["a-very-long-subscription-name-indeed", 12345,
                                               "quarantined (gone)"]], right=[1])
    starts = [[line.index(word) for word in words] for line, words in zip(
        lines, [["NAME", "N", "STATE"], ["short", "1", "ok"],
                ["a-very-long", "12345", "quarantined"]], strict=True)]
    assert starts[0][0] == starts[1][0] == starts[2][0] == 0
    assert starts[0][2] == starts[1][2] == starts[2][2]  # STATE column lines up
    assert lines[1].index("1 ") + 1 == lines[2].index("12345") + 5  # numbers right-aligned
    assert all(line == line.rstrip() for line in lines)
