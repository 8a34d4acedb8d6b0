"""Helpers for the main-job tests: configs on disk, the notifier as a subprocess, jsonl streams
replayed into live sets, and the simulator's ground truth per subscription filter."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from notifier.core.events import ChangeKind, event_id
from notifier.simulator import Knobs, Simulator, SimulatorConfig
from notifier.simulator.config import DEFAULT_ACCESS_TOKEN
from notifier.simulator.model import Rel
from tests.contract import assert_valid

CREATED = "com.autodesk.bim360.relationship.created"
DELETED = "com.autodesk.bim360.relationship.deleted"
ROOT = Path(__file__).resolve().parents[2]

StreamKey = tuple[str, str]  # (subscription, container id)


# --- the simulator --------------------------------------------------------------------------------


def sim_config(containers: Sequence[str], relationships: int = 30, seed: int = 11,
               **knobs: Any) -> SimulatorConfig:
    """Fixed containers, no rate limit unless asked, deterministic data."""
    knobs.setdefault("rpm", 0)
    return SimulatorConfig(containers=list(containers), relationships=relationships, seed=seed,
                           knobs=Knobs(**knobs))


# --- configuration files --------------------------------------------------------------------------


def base_config(
    tmp_path: Path,
    sim_url: str,
    subscriptions: list[dict[str, Any]],
    *,
    sinks: list[dict[str, Any]] | None = None,
    poll: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A config dict for the simulator: static token, fast polling, no metrics server."""
    data: dict[str, Any] = {
        "source": {"base_url": sim_url, "timeout": "5s", "max_attempts": 3,
                   "allow_insecure_http": True},
        "credentials": [{"name": "sim", "access_token": DEFAULT_ACCESS_TOKEN,
                         "requests_per_minute": 6000}],
        "state": {"path": str(tmp_path / "state.db")},
        "poll": {"interval": "0.2s", "max_staleness": "1s", "quarantine_backoff_initial": "30s",
                 **(poll or {})},
        "subscriptions": subscriptions,
        "sinks": sinks or [{"name": "archive", "type": "jsonl",
                            "path": str(tmp_path / "events.jsonl")}],
        "metrics": {"enabled": False},
        "logging": {"level": "INFO", "format": "text"},
        "shutdown_timeout": "5s",
    }
    data.update(extra)
    return data


def write_config(tmp_path: Path, data: Mapping[str, Any], name: str = "notifier.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


# --- reading the delivered stream -------------------------------------------------------------


@dataclass
class JsonlRead:
    events: list[dict[str, Any]]
    partial_tail: bytes = b""  # an unterminated last line (a write cut by a crash), if any


def read_jsonl(path: Path) -> JsonlRead:
    """Every complete line parsed strictly; a trailing line without its newline is set aside.

    A line in the middle that does not parse fails the test: the sink must never leave one; nor
    may an event that breaks the contract (tests/contract.py).
    """
    if not path.exists():
        return JsonlRead([])
    raw = path.read_bytes()
    body, _, tail = raw.rpartition(b"\n")
    if not body and not raw.endswith(b"\n"):
        body, tail = b"", raw
    events = []
    for n, line in enumerate(body.split(b"\n") if body else [], start=1):
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{n}: not a JSON line ({exc}): {line[:200]!r}") from None
    assert_valid(events)
    return JsonlRead(events, tail)


def by_stream(events: Iterable[Mapping[str, Any]]) -> dict[StreamKey, list[Mapping[str, Any]]]:
    out: dict[StreamKey, list[Mapping[str, Any]]] = defaultdict(list)
    for e in events:
        out[(e["data"]["subscription"], e["data"]["containerId"])].append(e)
    return out


def replay(events: Iterable[Mapping[str, Any]]) -> dict[StreamKey, set[str]]:
    """Apply the stream in order: created adds the relationship, deleted removes it."""
    live: dict[StreamKey, set[str]] = defaultdict(set)
    for e in events:
        key = (e["data"]["subscription"], e["data"]["containerId"])
        if e["type"] == CREATED:
            live[key].add(e["subject"])
        elif e["type"] == DELETED:
            live[key].discard(e["subject"])
        else:
            raise AssertionError(f"unexpected event type {e['type']!r}")
    return live


def check_stream_invariants(events: Sequence[Mapping[str, Any]]) -> dict[StreamKey, set[str]]:
    """Assert what every delivered stream must satisfy; return the event ids per stream.

    * CloudEvents envelope as in docs/schemas/, id = the deterministic id of the change;
    * an id delivered twice to a subscription is the same change (same type and subject);
    * per relationship, its created event comes before its deleted event.
    """
    ids: dict[StreamKey, dict[str, tuple[str, str]]] = defaultdict(dict)
    first_seen: dict[tuple[StreamKey, str, str], int] = {}
    for n, e in enumerate(events):
        assert e["specversion"] == "1.0"
        assert e["datacontenttype"] == "application/json"
        assert isinstance(e["snapshot"], bool)
        cid = e["data"]["containerId"]
        assert e["source"] == f"/bim360/relationship/v2/containers/{cid}"
        assert e["data"]["relationship"]["id"] == e["subject"]
        kind = ChangeKind.CREATED if e["type"] == CREATED else ChangeKind.DELETED
        assert e["id"] == event_id(cid, e["subject"], kind), e
        key = (e["data"]["subscription"], cid)
        seen = ids[key].setdefault(e["id"], (e["type"], e["subject"]))
        assert seen == (e["type"], e["subject"]), f"two changes share id {e['id']}"
        first_seen.setdefault((key, e["subject"], e["type"]), n)
    for (key, rid, etype), n in first_seen.items():
        if etype == DELETED and (key, rid, CREATED) in first_seen:
            assert first_seen[(key, rid, CREATED)] < n, f"{key} {rid}: deleted before created"
    return {k: set(v) for k, v in ids.items()}


def duplicates(events: Sequence[Mapping[str, Any]]) -> int:
    """How many deliveries repeat an (subscription, id) already delivered."""
    seen: set[tuple[str, str]] = set()
    dups = 0
    for e in events:
        k = (e["data"]["subscription"], e["id"])
        dups += k in seen
        seen.add(k)
    return dups


# --- ground truth ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """What a subscription selects: everything, some domains, or a search query."""

    domains: frozenset[str] | None = None
    query: Mapping[str, str] | None = field(default=None, hash=False)

    def matches(self, rel: Rel) -> bool:
        a, b = rel.a, rel.b
        if self.domains is not None:
            return a[0] in self.domains or b[0] in self.domains
        if self.query is not None:
            q = self.query
            spec = (q.get("domain"), q.get("type"), q.get("id"))
            with_spec = (q.get("withDomain"), q.get("withType"), q.get("withId"))
            return (_spec_ok(spec, a) and _spec_ok(with_spec, b)) or (
                _spec_ok(spec, b) and _spec_ok(with_spec, a))
        return True


def _spec_ok(spec: tuple[str | None, ...], entity: tuple[str, str, str]) -> bool:
    return all(want is None or want == got for want, got in zip(spec, entity, strict=True))


def filter_of(sub: Mapping[str, Any]) -> Filter:
    if sub.get("domains"):
        return Filter(domains=frozenset(sub["domains"]))
    if sub.get("query"):
        return Filter(query=dict(sub["query"]))
    return Filter()


def truth_live(sim: Simulator, container_id: str, flt: Filter) -> set[str]:
    """The relationships alive now in the simulator that the filter selects."""
    c = sim.state.container(container_id)
    return {r.id for r in c.by_id.values() if not r.dseq and flt.matches(r)}


def truth_change_ids(sim: Simulator, container_id: str, flt: Filter, since_seq: int) -> set[str]:
    """Event ids of every change the subscription must deliver, from a bootstrap at ``since_seq``:
    a created event for what was alive then, and every matching change after it."""
    c = sim.state.container(container_id)
    out = set()
    for r in c.by_id.values():
        if not flt.matches(r):
            continue
        alive_at_start = r.cseq <= since_seq and (r.dseq == 0 or r.dseq > since_seq)
        if alive_at_start or r.cseq > since_seq:
            out.add(event_id(container_id, r.id, ChangeKind.CREATED))
        if r.dseq and r.dseq > since_seq:
            out.add(event_id(container_id, r.id, ChangeKind.DELETED))
    return out


def relationship(sim: Simulator, container_id: str, rel_id: str) -> Rel:
    """The simulator's record of one relationship (alive or deleted)."""
    return sim.state.container(container_id).by_id[uuid.UUID(rel_id).int]


def mismatch(live: Mapping[StreamKey, set[str]], truth: Mapping[StreamKey, set[str]]) -> str:
    """A readable description of how replayed live sets differ from the truth ('' if none)."""
    lines = []
    for key in sorted(set(live) | set(truth)):
        got, want = live.get(key, set()), truth.get(key, set())
        if got != want:
            lines.append(f"{key}: missing {sorted(want - got)[:5]} ({len(want - got)}), "
                         f"extra {sorted(got - want)[:5]} ({len(got - want)})")
    return "\n".join(lines)


# --- waiting -------------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], within: float,
                   what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        res = predicate()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


# --- the notifier as a subprocess -------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    return env


def _open_log(path: Path) -> Any:
    return open(path, "ab")  # handed to the child, closed by the caller right after


async def start_notifier(config: Path, *args: str, log: Path | None = None
                         ) -> asyncio.subprocess.Process:
    """``python -m notifier run --config F``; stderr goes to ``log`` (appended) if given."""
    err: Any = asyncio.subprocess.PIPE if log is None else _open_log(log)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notifier", "run", "--config", str(config), *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=err, env=child_env(), cwd=str(ROOT))
    finally:
        if log is not None:
            err.close()


async def run_cli(*args: str, within: float = 30.0) -> tuple[int, str, str]:
    """``python -m notifier ARGS``: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=child_env(), cwd=str(ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        raise AssertionError(f"notifier {' '.join(args)} did not finish in {within}s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def stop_process(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM,
                       within: float = 10.0) -> int:
    """Send ``sig`` and wait for the exit status (killing it if it overstays)."""
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"notifier did not exit within {within}s of signal {sig}") from None


def set_stored_token(db: Path, subscription: str, container_id: str, token: str) -> None:
    """Overwrite a stream's stored sync token (simulates a corrupted or foreign token)."""
    with sqlite3.connect(db) as conn:
        cur = conn.execute(
            "UPDATE streams SET sync_token = ? WHERE subscription = ? AND container_id = ?",
            (token, subscription, container_id))
        assert cur.rowcount == 1, (subscription, container_id)
    conn.close()


async def status_json(config: Path) -> dict[StreamKey, dict[str, Any]]:
    rc, out, err = await run_cli("status", "--config", str(config), "--json")
    assert rc == 0, err
    rows = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    return {(r["subscription"], r["container_id"]): r for r in rows}
