"""``notifier webhooks``: list and replay dead letters, re-deliver a time window of events.

    notifier webhooks --config FILE dlq list    [--sink S] [--since T] [--until T] [--limit N]
    notifier webhooks --config FILE dlq replay  [--sink S] [--since T] [--until T]
    notifier webhooks --config FILE redeliver   --sink S --since T [--until T]

Times are RFC 3339 (``2024-05-01T12:00:00Z``), ``now``, or a duration back from now (``2h``,
``30m``, ``1d``). Windows are half open, [since, until), on the time an event was queued in the
outbox. These commands only change the state file: a running notifier picks the rows up within
its dispatcher's poll interval, and so does the next start. ``--json`` prints JSON lines. In
cluster mode ``dlq list`` reads the state topic; replay and redeliver are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from notifier.config import Config, WebhookSinkConfig, load_config
from notifier.durations import parse_duration
from notifier.errors import ConfigError, NotifierError, StateError
from notifier.state.base import OutboxRow
from notifier.state.sqlite import SqliteStateStore

_TIME_HELP = "RFC 3339 time, 'now', or a duration ago such as 2h, 30m, 1d"
_REASON_CHARS = 60
_DESCRIPTION = """\
Dead-lettered webhook events, and re-delivery of a time window of events.

  notifier webhooks --config FILE dlq list    [--sink S] [--since T] [--until T] [--limit N]
  notifier webhooks --config FILE dlq replay  [--sink S] [--since T] [--until T]
  notifier webhooks --config FILE redeliver   --sink S --since T [--until T]

T is an RFC 3339 time (2024-05-01T12:00:00Z), 'now', or a duration ago (2h, 30m, 1d).
Windows are [since, until) on the time an event was queued. A running notifier delivers
replayed and re-queued events within a second or so; otherwise the next start does.
"""


def parse_time(text: str, now: float) -> float:
    """Epoch seconds from RFC 3339 (with a zone), ``now``, or a duration back from ``now``."""
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        try:
            return now - parse_duration(value)
        except ValueError:
            raise ValueError(f"invalid time {value!r} ({_TIME_HELP})") from None
    if when.tzinfo is None:
        raise ValueError(f"time {value!r} needs a zone, such as Z or +02:00")
    return when.timestamp()


def format_time(epoch: float | None) -> str:
    """RFC 3339 in UTC, to the second; '-' for no time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``webhooks`` (with ``dlq list``, ``dlq replay`` and ``redeliver``) to a CLI."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML configuration file")
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON lines instead of a table")

    hooks: argparse.ArgumentParser = subparsers.add_parser(
        "webhooks", parents=[parent], help="webhook dead letters and re-delivery",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    dlq = actions.add_parser("dlq", help="dead-lettered events: list or replay")
    dlq_actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for name, text in (("list", "list dead-lettered events, oldest first"),
                       ("replay", "queue dead-lettered events again (attempts start over)")):
        cmd = dlq_actions.add_parser(name, parents=[parent], help=text, description=text)
        cmd.add_argument("--sink", help="only this webhook sink (default: all)")
        cmd.add_argument("--since", metavar="T", help=f"queued at or after T ({_TIME_HELP})")
        cmd.add_argument("--until", metavar="T", help=f"queued before T ({_TIME_HELP})")
        if name == "list":
            cmd.add_argument("--limit", type=int, default=100, help="at most N rows (100)")
            cmd.add_argument("--payload", action="store_true",
                             help="with --json: include each CloudEvent")

    text = "queue already delivered events of a time window again, with the same ids"
    red = actions.add_parser("redeliver", parents=[parent], help=text, description=text)
    red.add_argument("--sink", required=True, help="the webhook sink")
    red.add_argument("--since", metavar="T", required=True,
                     help=f"queued at or after T ({_TIME_HELP})")
    red.add_argument("--until", metavar="T", default="now", help="queued before T (now)")
    return hooks


def webhooks_main(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run a ``notifier webhooks`` command: 0 done, 1 state store failure, 2 bad input."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    config_path = getattr(args, "config", None)
    if not config_path:
        print("notifier webhooks: --config FILE is required", file=err)
        return 2
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{config_path}: {line}", file=err)
        return 2
    now = time.time()
    try:
        sinks = _webhook_sinks(config, args.sink)
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"notifier webhooks: {exc}", file=err)
        return 2
    if since is not None and until is not None and since >= until:
        print("notifier webhooks: --since must be before --until", file=err)
        return 2
    if config.cluster is not None:
        return _cluster_main(args, config, sinks, since, until, now, out, err)
    path = Path(config.state.path)
    if not path.exists():
        print(f"notifier webhooks: no state file at {path}", file=err)
        return 2
    try:
        return asyncio.run(_run(args, path, sinks, since, until, now, out))
    except StateError as exc:
        print(f"notifier webhooks: {exc}", file=err)
        return 1


def _cluster_main(
    args: argparse.Namespace, config: Config, sinks: list[str], since: float | None,
    until: float | None, now: float, out: TextIO, err: TextIO,
) -> int:
    """Cluster mode: the dead letters as the state topic holds them (a replica's file is only
    a cache of its own partitions); replay and redeliver are refused."""
    if args.webhooks_command != "dlq" or args.dlq_command != "list":
        print("notifier webhooks: dlq replay and redeliver are not available in cluster mode: "
              "the outbox lives in the state topic, and only the replica that owns a row's "
              "work partition may change it (dlq list works)", file=err)
        return 2
    from notifier.cluster.transfer import export_state  # Kafka only when needed

    async def listed() -> int:
        with tempfile.TemporaryDirectory(prefix="notifier-webhooks-") as tmp:
            copy = Path(tmp) / "state.db"
            await export_state(config, copy)
            return await _run(args, copy, sinks, since, until, now, out)

    try:
        return asyncio.run(listed())
    except NotifierError as exc:  # the state topic could not be read
        print(f"notifier webhooks: {exc}", file=err)
        return 1


def _webhook_sinks(config: Config, name: str | None) -> list[str]:
    names = [s.name for s in config.sinks if isinstance(s, WebhookSinkConfig)]
    if name is None:
        return names
    if name not in names:
        known = ", ".join(names) or "none"
        raise ValueError(f"no webhook sink named {name!r} in the config (webhook sinks: {known})")
    return [name]


async def _run(
    args: argparse.Namespace, path: Path, sinks: list[str], since: float | None,
    until: float | None, now: float, out: TextIO,
) -> int:
    as_json = getattr(args, "json", False)
    async with SqliteStateStore(path) as store:
        if args.webhooks_command == "redeliver":
            assert since is not None
            assert until is not None
            n = await store.redeliver(sinks[0], since, until, now=now)
            _done(out, as_json, "queued for redelivery", n, sinks, since, until)
        elif args.dlq_command == "replay":
            n = sum([await store.dlq_replay(s, since, until) for s in sinks])
            _done(out, as_json, "replayed", n, sinks, since, until)
            kept = sum([len(await store.dlq_list(s, since, until, 1_000_000)) for s in sinks])
            if kept and not as_json:
                print(f"kept dead: {kept} (a later event of the same relationship was already "
                      f"delivered; replaying would reorder them)", file=out)
        else:
            rows: list[OutboxRow] = []
            for s in sinks:
                rows += await store.dlq_list(s, since, until, args.limit)
            rows.sort(key=lambda r: r.row_id)
            rows = rows[:args.limit]
            _print_rows(out, rows, as_json=as_json, payload=args.payload)
            if len(rows) == args.limit and not as_json:
                print(f"(first {args.limit}; use --limit or a narrower window for more)", file=out)
    return 0


def _done(
    out: TextIO, as_json: bool, what: str, n: int, sinks: list[str], since: float | None,
    until: float | None,
) -> None:
    if as_json:
        line = {"action": what, "count": n, "sinks": sinks,
                "since": format_time(since), "until": format_time(until)}
        out.write(orjson.dumps(line).decode() + "\n")
        return
    window = f" queued {format_time(since)} .. {format_time(until)}" if since or until else ""
    print(f"{what}: {n} event{'s' * (n != 1)} of {', '.join(sinks) or 'no sink'}{window}",
          file=out)


def _event_type(row: OutboxRow) -> str:
    try:
        kind = str(orjson.loads(row.payload).get("type", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return "?"
    return kind.rsplit(".", 1)[-1] or "?"


def _print_rows(out: TextIO, rows: list[OutboxRow], *, as_json: bool, payload: bool) -> None:
    if as_json:
        for r in rows:
            line: dict[str, Any] = {
                "sink": r.sink, "event_id": r.event_id, "relationship": r.ordering_key,
                "kind": _event_type(r), "event_time": r.event_time,
                "queued_at": format_time(r.created_at), "dead_at": format_time(r.dead_at),
                "attempts": r.attempts, "reason": r.dead_reason,
            }
            if payload:
                line["event"] = orjson.loads(r.payload)
            out.write(orjson.dumps(line).decode() + "\n")
        return
    if not rows:
        print("no dead-lettered events", file=out)
        return
    header = ("DEAD AT", "SINK", "EVENT ID", "KIND", "RELATIONSHIP", "ATTEMPTS", "REASON")
    table = [header] + [
        (format_time(r.dead_at), r.sink, r.event_id, _event_type(r), r.ordering_key,
         str(r.attempts), _short(r.dead_reason or ""))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        print("  ".join(cells).rstrip(), file=out)


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."
