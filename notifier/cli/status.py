"""``notifier status``: what the state store knows about every configured stream."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

from notifier.cli.output import print_config_error
from notifier.config import load_config
from notifier.errors import ConfigError, StateError
from notifier.state.base import StreamState
from notifier.state.sqlite import SqliteStateStore


def _age(now: float, t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


async def collect(config_path: str) -> list[dict[str, Any]]:
    config = load_config(config_path)
    async with SqliteStateStore(config.state.path) as store:
        states = {st.key: st for st in await store.list_streams()}
    rows = []
    for sub, cid in config.streams():
        # A stream the store has never seen: not bootstrapped, nothing known.
        st = states.get((sub.name, cid)) or StreamState(
            subscription=sub.name, container_id=cid, sync_token=None, resync_cursor=None,
            in_resync=False, last_checked_at=None, last_changed_at=None, token_updated_at=None,
            known_count=0, quarantined_until=None, quarantine_reason=None, failures=0,
        )
        rows.append({
            "subscription": sub.name,
            "container_id": cid,
            "bootstrapped": bool(st.sync_token),
            "in_resync": st.in_resync,
            "last_checked_at": st.last_checked_at,
            "last_changed_at": st.last_changed_at,
            "token_updated_at": st.token_updated_at,
            "known_relationships": st.known_count,
            "quarantined_until": st.quarantined_until,
            "quarantine_reason": st.quarantine_reason,
            "failures": st.failures,
        })
    return rows


def add_parser(sub: Any) -> None:
    """Add ``status`` to the top-level subparsers."""
    status = sub.add_parser("status", help="per subscription: last check, token age, quarantine")
    status.add_argument("--config", required=True, metavar="FILE")
    status.add_argument("--json", action="store_true", help="one JSON object per stream")


def status_main(config_path: str, *, as_json: bool = False) -> int:
    try:
        rows = asyncio.run(collect(config_path))
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return 2
    except StateError as exc:
        print(f"state store: {exc}", file=sys.stderr)
        return 1
    if as_json:
        for r in rows:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        return 0
    now = time.time()
    header = f"{'SUBSCRIPTION':<20} {'CONTAINER':<38} {'LAST CHECK':<11} {'TOKEN':<11} " \
             f"{'KNOWN':>8}  STATE"
    print(header)
    for r in rows:
        q = r["quarantined_until"]
        if q and q > now:
            state = f"quarantined ({r['quarantine_reason']}) for {q - now:.0f}s more"
        elif r["in_resync"]:
            state = "resyncing"
        elif not r["bootstrapped"]:
            state = "not bootstrapped"
        else:
            state = "ok"
        print(f"{r['subscription']:<20} {r['container_id']:<38} "
              f"{_age(now, r['last_checked_at']):<11} {_age(now, r['token_updated_at']):<11} "
              f"{r['known_relationships']:>8}  {state}")
    return 0
