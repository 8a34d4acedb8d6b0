"""``notifier status``: what the state store knows about every configured stream."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from notifier.cli.output import format_table, print_config_error
from notifier.config import load_config
from notifier.errors import ConfigError, NotifierError, StateError
from notifier.hub_watch import HubStatus, read_statuses, status_path
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
    if config.cluster is not None:  # the state topic is the truth, not a replica's cache
        from notifier.cluster.transfer import export_state  # Kafka only when needed

        with tempfile.TemporaryDirectory(prefix="notifier-status-") as tmp:
            copy = Path(tmp) / "state.db"
            await export_state(config, copy)
            async with SqliteStateStore(copy) as store:
                states = {st.key: st for st in await store.list_streams()}
    else:
        async with SqliteStateStore(config.state.path) as store:
            states = {st.key: st for st in await store.list_streams()}
    # Hub subscriptions: the streams discovery found (stored, not orphaned by a retirement).
    pairs = list(config.streams()) + [
        (sub, st.container_id) for sub in config.hub_subscriptions
        for st in sorted(states.values(), key=lambda st: st.container_id)
        if st.subscription == sub.name and st.orphaned_at is None
    ]
    rows = []
    for sub, cid in pairs:
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


def hub_rows(config_path: str) -> list[dict[str, Any]]:
    """Per hub subscription, what the running service last reported about discovery."""
    config = load_config(config_path)
    reported = {r.get("subscription"): r for r in read_statuses(status_path(config.state.path))}
    return [reported.get(sub.name) or HubStatus(sub.name, sub.hub_id or "",
                                                sub.credential_names[0]).to_json()
            for sub in config.hub_subscriptions]


def _print_hubs(hubs: list[dict[str, Any]], now: float) -> None:
    rows = []
    for h in hubs:
        failing = h.get("consecutive_failures") or 0
        error = h.get("last_error") or "-"
        if failing:
            error = f"{error} ({failing} in a row)"
        rows.append([h["subscription"], h.get("watched", 0), h.get("listed", 0),
                     h.get("added", 0), h.get("retired", 0), _age(now, h.get("last_success_at")),
                     error])
    print()
    for line in format_table(["HUB SUBSCRIPTION", "WATCHED", "LISTED", "ADDED", "RETIRED",
                              "LAST DISCOVERY", "LAST ERROR"], rows, right=[1, 2, 3, 4]):
        print(line)


def status_main(config_path: str, *, as_json: bool = False) -> int:
    try:
        rows = asyncio.run(collect(config_path))
        hubs = hub_rows(config_path)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return 2
    except NotifierError as exc:  # the store, or in cluster mode the state topic
        where = "state store" if isinstance(exc, StateError) else "state topic"
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        for r in rows:
            sys.stdout.write(orjson.dumps(r).decode() + "\n")
        for h in hubs:
            sys.stdout.write(orjson.dumps({"hub_subscription": h}).decode() + "\n")
        return 0
    now = time.time()
    table = []
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
        table.append([r["subscription"], r["container_id"], _age(now, r["last_checked_at"]),
                      _age(now, r["token_updated_at"]), r["known_relationships"], state])
    for line in format_table(
            ["SUBSCRIPTION", "CONTAINER", "LAST CHECK", "TOKEN", "KNOWN", "STATE"], table,
            right=[4]):
        print(line)
    if hubs:
        _print_hubs(hubs, now)
    return 0
