"""Is a credential alive? A pure judgement from what the state store recorded, with ``now``.

A three-legged credential is **dead** when it cannot get an access token without someone acting:
its last refresh outcome is one of ``DEAD_OUTCOMES`` and nothing succeeded since; or its refresh
token is older than 15 days (APS refresh tokens expire 15 days after issue, and every refresh
issues a new one, so only an unused credential gets there); or it has no refresh token at all
(no seed in the configuration and none stored by ``notifier auth login``). A stored token counts
only if it grew from the configured seed (a changed seed replaces it, as the notifier does).
"""

from __future__ import annotations

from dataclasses import dataclass

REFRESH_TOKEN_LIFETIME = 15 * 24 * 3600.0
# Refresh outcomes after which a credential stays dead until someone acts (new refresh token
# or client id/secret); the others (unavailable, store_failed) are transient.
DEAD_OUTCOMES = ("invalid_grant", "missing", "rejected")

_WHY = {
    "invalid_grant": "refresh token rejected (invalid_grant: spent, revoked or expired)",
    "missing": "no refresh token",
    "rejected": "client id/secret rejected by the token endpoint",
}


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the state store knows about a credential (Unix seconds; None = never)."""

    seed_fingerprint: str | None = None
    token_issued_at: float | None = None
    last_refresh_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True)
class Health:
    name: str
    state: str  # ok, dead, static, seeded (configured seed not used yet)
    detail: str
    last_refresh_at: float | None = None
    token_issued_at: float | None = None
    token_expires_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    @property
    def dead(self) -> bool:
        return self.state == "dead"


def assess(name: str, *, static: bool, has_seed: bool, seed_fingerprint: str,
           recorded: Recorded | None, now: float) -> Health:
    """The health of credential ``name``; ``seed_fingerprint`` is that of the configured seed
    ("" seed when there is none), as the notifier computes it."""
    if static:
        return Health(name, "static", "static access token (never refreshed)")
    rec = recorded or Recorded()
    same_lineage = rec.seed_fingerprint is not None and rec.seed_fingerprint == seed_fingerprint
    issued = rec.token_issued_at if same_lineage else None
    expires = issued + REFRESH_TOKEN_LIFETIME if issued is not None else None

    def health(state: str, detail: str) -> Health:
        return Health(name, state, detail, rec.last_refresh_at, issued, expires,
                      rec.last_error, rec.last_error_at)

    failed_last = rec.last_error is not None and (
        rec.last_refresh_at is None
        or (rec.last_error_at is not None and rec.last_error_at >= rec.last_refresh_at))
    if issued is None:
        if not has_seed:
            return health("dead", "no refresh token: run `notifier auth login`")
        if rec.seed_fingerprint is not None and not same_lineage:
            return health("seeded", "new seed in the configuration, not used yet")
        if failed_last and rec.last_error in DEAD_OUTCOMES:
            return health("dead", _WHY.get(rec.last_error, rec.last_error or ""))
        return health("seeded", "seed from the configuration, not used yet")
    if failed_last and rec.last_error in DEAD_OUTCOMES:
        return health("dead", _WHY.get(rec.last_error, rec.last_error or ""))
    assert expires is not None
    if expires <= now:
        return health("dead", "refresh token expired (unused for 15 days)")
    if failed_last:
        return health("ok", f"last refresh failed ({rec.last_error}), retrying")
    return health("ok", "refreshing")
