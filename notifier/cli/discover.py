"""``notifier discover --config FILE``: what each hub subscription would watch right now.

For every hub subscription (or the one named with ``--subscription``), list the hub's projects
as the subscription's credential sees them: name, project id, container id (the project id
without ``b.``), and ``included`` or why not. Exit 0 when every listing worked, 1 when one
failed (its error is printed; a 403 also lists the hubs the user does see), 2 for a bad config.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import orjson

from notifier.cli.output import print_config_error
from notifier.config import Config, SubscriptionConfig, load_config
from notifier.discovery import Listed, list_projects, projects_client, token_provider
from notifier.errors import ConfigError, ForbiddenError, NotifierError
from notifier.source.credential_log import RefreshRecorder
from notifier.source.http import create_session
from notifier.source.projects import ProjectsClient
from notifier.state.sqlite import SqliteStateStore


def add_parser(sub: Any) -> None:
    """Add ``discover`` to the top-level subparsers."""
    disc = sub.add_parser("discover", help="list what each hub subscription would watch now")
    disc.add_argument("--config", required=True, metavar="FILE")
    disc.add_argument("--subscription", metavar="NAME", help="only this hub subscription")
    disc.add_argument("--json", action="store_true", help="one JSON object per project")


def discover_main(path: str, *, subscription: str | None = None, as_json: bool = False,
                  stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config = load_config(path)
    except ConfigError as exc:
        print_config_error(exc, err)
        return 2
    subs = [s for s in config.hub_subscriptions if subscription in (None, s.name)]
    if not subs:
        what = f"no hub subscription named {subscription!r}" if subscription else \
            "no hub subscriptions (hub_id)"
        print(f"{path}: {what}", file=err)
        return 2 if subscription else 0
    return asyncio.run(_discover(config, subs, as_json, out, err))


async def _discover(config: Config, subs: list[SubscriptionConfig], as_json: bool,
                    out: TextIO, err: TextIO) -> int:
    failed = 0
    async with SqliteStateStore(config.state.path) as store, \
            create_session(timeout=config.source.timeout) as session:
        clients: dict[str, ProjectsClient] = {}
        for sub in subs:
            name = sub.credential_names[0]
            if name not in clients:
                cred = config.credential_named(name)
                clients[name] = projects_client(
                    config, name, session, token_provider(config, cred, session, store,
                                                     RefreshRecorder(store)))
            try:
                listed = await list_projects(clients[name], sub)
            except NotifierError as exc:
                failed += 1
                print(f"subscription {sub.name}: cannot list hub {sub.hub_id} as credential "
                      f"{name}: {exc}", file=err)
                if isinstance(exc, ForbiddenError):
                    await _explain_forbidden(clients[name], err)
                continue
            _print(sub, listed, as_json, out)
    return 1 if failed else 0


async def _explain_forbidden(client: ProjectsClient, err: TextIO) -> None:
    try:
        hubs = await client.hubs()
    except NotifierError as exc:
        print(f"  (cannot list the user's hubs either: {exc})", file=err)
        return
    seen = ", ".join(f"{h.id} ({h.name})" for h in hubs) or "none"
    print(f"  hubs this user sees: {seen}", file=err)


def _print(sub: SubscriptionConfig, listed: list[Listed], as_json: bool, out: TextIO) -> None:
    if as_json:
        for item in listed:
            out.write(orjson.dumps({
                "subscription": sub.name, "hubId": sub.hub_id, "name": item.project.name,
                "projectId": item.project.id, "containerId": item.project.container_id,
                "included": item.verdict.included, "reason": item.verdict.reason,
            }).decode() + "\n")
        return
    watched = sum(1 for i in listed if i.verdict.included)
    print(f"subscription {sub.name}: hub {sub.hub_id}, {len(listed)} projects, "
          f"{watched} watched", file=out)
    rows = [("NAME", "PROJECT ID", "CONTAINER ID", "WATCHED")] + [
        (i.project.name, i.project.id, i.project.container_id or "-", i.verdict.reason)
        for i in listed]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for row in rows:
        cells = [row[c].ljust(widths[c]) for c in range(3)]
        print("  " + "  ".join([*cells, row[3]]), file=out)
