"""``notifier auth``: sign a credential in once (``login``) and show credential health (``status``).

    notifier auth login --config FILE --credential NAME [--port 8765] [--scope data:read]
                        [--print] [--no-browser] [--timeout 5m]
    notifier auth status --config FILE [--json]

``login`` runs the authorization-code flow with PKCE (notifier.source.login) and stores the
refresh token in the state store as the credential's current one, under the lineage of the
configured seed (none is fine), so the next ``notifier run`` uses it; with ``--print`` it prints
the token once instead (for a Kubernetes secret) and touches no state. ``status`` judges every
credential from what the store recorded (notifier.core.credential_health) and exits 1 when one
is dead. Exit codes: 0 success, 1 failure (sign-in failed, a credential is dead, the state store
is broken), 2 usage or configuration error, or the state file locked by a running notifier.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from notifier.cli.output import format_table, print_config_error
from notifier.config import Config, CredentialConfig, load_config
from notifier.core.credential_health import Health, Recorded, assess
from notifier.durations import parse_duration
from notifier.errors import ConfigError, StateError, StateLockedError
from notifier.source.auth import seed_fingerprint
from notifier.source.http import create_session
from notifier.source.login import DEFAULT_PORT, DEFAULT_SCOPES, LoginError, sign_in
from notifier.state.lock import StateLock
from notifier.state.sqlite import SqliteStateStore

_DESCRIPTION = """\
Sign a credential in (three-legged OAuth with PKCE) and show credential health.

  notifier auth login --config FILE --credential NAME [--print]
  notifier auth status --config FILE [--json]

login prints the authorize URL (and opens it in a browser when there is one), waits for the
redirect on http://127.0.0.1:PORT/callback, exchanges the code and stores the refresh token in
the state store (stop the notifier first), or prints it once with --print.
Exit codes: 0 ok, 1 failure or a dead credential, 2 usage/configuration error.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("auth", help="sign a credential in (login) or show credential health",
                       description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    login = cmds.add_parser("login", help="get a credential's first refresh token")
    login.add_argument("--config", required=True, metavar="FILE")
    login.add_argument("--credential", required=True, metavar="NAME")
    login.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"callback port on 127.0.0.1 (default {DEFAULT_PORT}); the APS app "
                            "must list http://127.0.0.1:PORT/callback as a callback URL")
    login.add_argument("--scope", action="append", metavar="SCOPE",
                       help="OAuth scope, repeatable (default: data:read)")
    login.add_argument("--print", action="store_true", dest="print_token",
                       help="print the refresh token once instead of storing it")
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    login.add_argument("--timeout", default="5m", help="how long to wait for the sign-in")
    status = cmds.add_parser("status", help="per credential: last refresh, token age, expiry")
    status.add_argument("--config", required=True, metavar="FILE")
    status.add_argument("--json", action="store_true", help="one JSON object per credential")


def auth_main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print_config_error(exc, sys.stderr)
        return 2
    if args.auth_command == "login":
        return _login(config, args)
    return _status(config, as_json=args.json)


# -- login -----------------------------------------------------------------------------------------


def _has_browser() -> bool:
    """Only a graphical session: a text browser would take over the terminal."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _login_inputs(config: Config, args: argparse.Namespace
                  ) -> tuple[CredentialConfig, float] | None:
    """The credential to sign in and the timeout, or None once the problem is printed."""
    creds = {c.name: c for c in config.credentials}
    cred = creds.get(args.credential)
    if cred is None:
        print(f"auth login: unknown credential {args.credential!r} "
              f"(known: {', '.join(creds) or 'none'})", file=sys.stderr)
        return None
    if cred.static or cred.client_id is None or cred.client_secret is None:
        print(f"auth login: credential {cred.name!r} has no client_id/client_secret (a static "
              "access_token is never refreshed): nothing to sign in", file=sys.stderr)
        return None
    try:
        wait = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"auth login: --timeout: {exc}", file=sys.stderr)
        return None
    if not 0 <= args.port <= 65535:
        print("auth login: --port must be 0..65535", file=sys.stderr)
        return None
    return cred, wait


def _login(config: Config, args: argparse.Namespace) -> int:
    inputs = _login_inputs(config, args)
    if inputs is None:
        return 2
    cred, wait = inputs
    scopes = tuple(args.scope or DEFAULT_SCOPES)
    open_browser = not args.no_browser and _has_browser()

    def show(url: str, redirect: str) -> None:
        print(f"Sign in as an Autodesk user who is a member of the projects of credential "
              f"{cred.name!r}.\nThe APS app must list this callback URL: {redirect}\n"
              f"Open this URL in a browser:\n\n  {url}\n", file=sys.stderr, flush=True)
        if open_browser:
            webbrowser.open(url)

    async def flow() -> str:
        async with create_session(timeout=config.source.timeout) as session:
            grant = await sign_in(
                session, base_url=str(config.source.base_url).rstrip("/"),
                token_url=config.source.resolved_token_url, client_id=cred.client_id or "",
                client_secret=cred.client_secret.get_secret_value() if cred.client_secret
                else "", port=args.port, scopes=scopes, wait=wait, show=show)
        return grant.refresh_token

    if args.print_token:
        try:
            token = asyncio.run(flow())
        except LoginError as exc:
            print(f"auth login: {exc}", file=sys.stderr)
            return 1
        print(token)
        print(f"Put it in the secret behind credentials[{cred.name}].refresh_token(_file) and "
              "restart the notifier. It is shown only this once.", file=sys.stderr)
        return 0
    seed = cred.refresh_token.get_secret_value() if cred.refresh_token else ""
    try:
        with StateLock(config.state.path):  # refuses while the notifier runs on this state
            token = asyncio.run(flow())
            asyncio.run(_store(config.state.path, cred.name, seed_fingerprint(seed), token))
    except LoginError as exc:
        print(f"auth login: {exc}", file=sys.stderr)
        return 1
    except StateLockedError as exc:
        print(f"auth login: {exc} (stop the notifier first, or use --print)", file=sys.stderr)
        return 2
    except StateError as exc:
        print(f"auth login: state store: {exc}", file=sys.stderr)
        return 1
    print(f"credential {cred.name!r}: signed in; the refresh token is stored in "
          f"{config.state.path}. Start the notifier within 15 days.", file=sys.stderr)
    return 0


async def _store(path: Path, credential: str, fingerprint: str, token: str) -> None:
    async with SqliteStateStore(path) as store:
        await store.save_refresh_token(credential, fingerprint, token)
        await store.record_credential_outcome(credential, "ok")


# -- status ----------------------------------------------------------------------------------------


async def _records(path: Path) -> dict[str, Recorded]:
    async with SqliteStateStore(path) as store:
        return {r.credential: Recorded(r.seed_fingerprint, r.token_issued_at, r.last_refresh_at,
                                       r.last_error, r.last_error_at)
                for r in await store.credential_records()}


def collect(config: Config, records: dict[str, Recorded], now: float) -> list[Health]:
    out = []
    for cred in config.credentials:
        seed = cred.refresh_token.get_secret_value() if cred.refresh_token else ""
        out.append(assess(cred.name, static=cred.static, has_seed=bool(seed),
                          seed_fingerprint=seed_fingerprint(seed),
                          recorded=records.get(cred.name), now=now))
    return out


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(now: float, t: float | None) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    return f"{s / 86400:.1f}d" if s >= 86400 else f"{s / 3600:.1f}h"


def _status(config: Config, *, as_json: bool) -> int:
    try:
        # Nothing ran yet: no state to read (and none to create).
        records = asyncio.run(_records(config.state.path)) if config.state.path.exists() else {}
    except StateError as exc:
        print(f"auth status: state store: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    healths = collect(config, records, now)
    if as_json:
        for h in healths:
            sys.stdout.write(orjson.dumps({
                "credential": h.name, "state": h.state, "dead": h.dead, "detail": h.detail,
                "last_refresh_at": h.last_refresh_at, "token_issued_at": h.token_issued_at,
                "token_expires_at": h.token_expires_at, "last_error": h.last_error,
                "last_error_at": h.last_error_at}).decode() + "\n")
    else:
        rows = [[h.name, h.state, _when(h.last_refresh_at), _age(now, h.token_issued_at),
                 _when(h.token_expires_at),
                 f"{h.last_error} at {_when(h.last_error_at)}" if h.last_error else "-",
                 h.detail] for h in healths]
        for line in format_table(["CREDENTIAL", "STATE", "LAST REFRESH", "TOKEN AGE",
                                  "EXPIRES", "LAST ERROR", "DETAIL"], rows):
            print(line)
    return 1 if any(h.dead for h in healths) else 0
