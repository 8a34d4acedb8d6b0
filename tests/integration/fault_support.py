"""Fault-suite helpers: the notifier as a killable subprocess whose output is kept, the secrets
to look for in that output, and the delivery checks every fault scenario ends with.

The checks, for every stream (subscription, container) of a run:

* nothing lost: every change the simulator made after the stream was caught up is delivered;
* nothing invented: every delivered event is a change the simulator really made (created: the
  relationship was alive at or after the start; deleted: it was deleted after the start);
* duplicates only with the same id: an id always names the same change, created before deleted;
* the stream, deduplicated on ``id`` and replayed, ends in the simulator's live set.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import ConsumerRecord

from notifier.core.events import ChangeKind, event_id
from notifier.simulator import Knobs, Simulator, SimulatorConfig
from tests.contract import assert_valid
from tests.integration.main_job_support import (
    ROOT,
    StreamKey,
    check_stream_invariants,
    child_env,
    filter_of,
    mismatch,
    replay,
    truth_change_ids,
    truth_live,
    wait_for,
)
from tests.integration.webhook_receiver import WebhookReceiver

Subs = list[dict[str, Any]]
ASSET = "autodesk-bim360-asset"
ISSUE = "autodesk-bim360-issue"


# --- the simulator, with secrets worth looking for ------------------------------------------


def secret_sim_config(containers: Sequence[str], relationships: int = 30, seed: int = 11,
                      *, static_token: bool = True, **knobs: Any) -> SimulatorConfig:
    """Fixed containers and data, no rate limit unless asked, and random credentials (so a
    secret found in a log cannot be a coincidence)."""
    knobs.setdefault("rpm", 0)
    return SimulatorConfig(
        containers=list(containers), relationships=relationships, seed=seed,
        access_token=("at-static-" + secrets.token_urlsafe(24)) if static_token else None,
        client_id="fault-client", client_secret="cs-" + secrets.token_urlsafe(24),
        refresh_token="rt-seed-" + secrets.token_urlsafe(24), knobs=Knobs(**knobs))


def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def issued_secrets(sim: Simulator, *extra: str) -> set[str]:
    """Every credential the simulator knows or issued, plus ``extra`` (e.g. webhook secrets:
    both the whole value and its key part)."""
    cfg, auth = sim.config, sim.state.auth
    found = {cfg.client_secret, cfg.refresh_token}
    if cfg.access_token:
        found.add(cfg.access_token)
    found |= set(auth._access) | set(auth._refresh)  # every access and refresh token issued
    for value in extra:
        found |= {value, value.removeprefix("whsec_")}
    return {s for s in found if s}


def assert_no_secrets(text: str, found: Iterable[str]) -> None:
    leaked = [s for s in found if s in text]
    assert not leaked, f"{len(leaked)} secrets in the notifier's output, e.g. {leaked[0][:6]}..."


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def quarantine_lines(text: str, reason: str | None = None) -> list[str]:
    """The notifier's 'stream quarantined' log lines (of one reason, if given)."""
    lines = [ln for ln in text.splitlines() if "stream quarantined" in ln]
    return [ln for ln in lines if reason is None or f"({reason})" in ln]


# --- the notifier as a subprocess -------------------------------------------------------------


class NotifierProcess:
    """``python -m notifier run --config F`` with stdout and stderr appended to files."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.stdout = workdir / "notifier.stdout"
        self.stderr = workdir / "notifier.stderr"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None, "already running"
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "notifier", "run", "--config", str(self.config),
                stdout=out, stderr=err, env=child_env(), cwd=str(ROOT))
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL; it must not have exited by itself before."""
        self.crash_now()
        await self.reap_crash()

    def crash_now(self) -> None:
        """Send SIGKILL at once (usable from synchronous code, e.g. inside a simulator hook);
        ``reap_crash`` collects it."""
        assert self.proc is not None
        assert self.proc.returncode is None, f"notifier exited early ({self.proc.returncode})\n" \
            + self.output()[-3000:]
        os.kill(self.proc.pid, signal.SIGKILL)

    async def reap_crash(self, within: float = 10.0) -> None:
        assert self.proc is not None
        assert await asyncio.wait_for(self.proc.wait(), within) == -signal.SIGKILL
        self.kills += 1

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self, within: float = 15.0) -> int:
        """SIGTERM and the exit status (SIGKILL and fail if it overstays)."""
        assert self.proc is not None
        # A stop request is about a running service: let this start finish first (each start
        # logs one "notifier <version> started:" line).
        deadline = asyncio.get_running_loop().time() + within
        while (self.proc.returncode is None  # noqa: ASYNC110 - polling a log file
               and self.output().count(" started: ") < self.starts
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.05)
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"notifier did not stop within {within}s of SIGTERM") from None

    def output(self) -> str:
        """Everything it printed so far, stderr then stdout."""
        return "".join(p.read_text(errors="replace") for p in (self.stderr, self.stdout)
                       if p.exists())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


# --- the state file ---------------------------------------------------------------------------


def stored_refresh_tokens(db: Path) -> list[str]:
    """The rotated refresh tokens the state store holds (read while the notifier runs)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT refresh_token FROM refresh_tokens")]
    except sqlite3.OperationalError as exc:  # not migrated yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


# --- ground truth and delivery checks ---------------------------------------------------------


def streams(subs: Subs) -> list[tuple[dict[str, Any], str]]:
    return [(s, cid) for s in subs for cid in (s.get("container_ids") or [s["container_id"]])]


def with_sink(subs: Subs, sink: str) -> Subs:
    return [s for s in subs if sink in s["sinks"]]


def requests_seen(sim: Simulator) -> int:
    """Relationship API requests the simulator has received (answered or refused)."""
    return sum(sim.state.stats.requests.values())


async def busy_for(sim: Simulator, requests: int, then: float, within: float = 15.0) -> None:
    """Wait until the notifier has sent ``requests`` more requests, then ``then`` seconds: a
    random moment in its work, not in its start-up."""
    target = requests_seen(sim) + requests
    await wait_for(lambda: requests_seen(sim) >= target, within, f"{requests} requests")
    await asyncio.sleep(then)


async def stop_changes(sim: Simulator) -> None:
    """Stop the change generator: from here on the ground truth holds still."""
    sim.state.set_knobs(change_rate=0.0)
    await asyncio.sleep(0)


def seqs(sim: Simulator) -> dict[str, int]:
    return {cid: sim.state.container(cid).seq for cid in sim.containers}


def nonempty(d: Mapping[StreamKey, set[str]]) -> dict[StreamKey, set[str]]:
    return {k: v for k, v in d.items() if v}


def truth(sim: Simulator, subs: Subs) -> dict[StreamKey, set[str]]:
    return nonempty({(s["name"], cid): truth_live(sim, cid, filter_of(s))
                     for s, cid in streams(subs)})


def dedup(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What a consumer keeps: the first delivery of each (subscription, id)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in events:
        key = (e["data"]["subscription"], e["id"])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def live(events: Iterable[Mapping[str, Any]]) -> dict[StreamKey, set[str]]:
    return nonempty(replay(dedup(events)))


def caught_up(sim: Simulator, subs: Subs, events: Sequence[Mapping[str, Any]]) -> bool:
    return live(events) == truth(sim, subs)


def lag(sim: Simulator, subs: Subs, events: Sequence[Mapping[str, Any]]) -> str:
    """Per stream that is not caught up: how many live relationships are missing from the
    replay and how many it holds that are gone (a stream far behind, or one stuck)."""
    got, want = live(events), truth(sim, subs)
    return "; ".join(
        f"{key}: {len(want.get(key, set()) - got.get(key, set()))} missing, "
        f"{len(got.get(key, set()) - want.get(key, set()))} extra"
        for key in sorted(set(got) | set(want)) if got.get(key) != want.get(key)) or "none"


def assert_delivery(sim: Simulator, subs: Subs, events: Sequence[Mapping[str, Any]], *,
                    since_start: Mapping[str, int], since_caught: Mapping[str, int] | None,
                    what: str = "") -> None:
    """The four checks of the module docstring, for every stream of ``subs``.

    ``since_start``: container seqs before the notifier first ran (anything older is history it
    must not report); ``since_caught``: seqs once it had caught up (everything newer must be
    delivered); None when intermediate history may be legitimately lost (overwrite resyncs).
    """
    ids = check_stream_invariants(events)
    names = {s["name"] for s in subs}
    for key in ids:
        assert key[0] in names, f"{what}: events for a subscription not under test: {key}"
    for s, cid in streams(subs):
        key = (s["name"], cid)
        got = ids.get(key, set())
        allowed = truth_change_ids(sim, cid, filter_of(s), since_start[cid])
        invented = got - allowed
        assert not invented, f"{what} {key}: {len(invented)} events for changes that did " \
            f"not happen, e.g. {sorted(invented)[:3]}"
        if since_caught is not None:
            must = truth_change_ids(sim, cid, filter_of(s), since_caught[cid])
            lost = must - got
            assert not lost, f"{what} {key}: {len(lost)} changes never delivered: " \
                + describe(sim, cid, lost)
    got_live, want = live(events), truth(sim, subs)
    assert got_live == want, f"{what}: final state differs\n{mismatch(got_live, want)}"


def describe(sim: Simulator, container_id: str, event_ids: Iterable[str], limit: int = 5) -> str:
    """Which changes these event ids stand for (relationship, kind, change-log positions)."""
    wanted = set(event_ids)
    out = []
    for rel in sim.state.container(container_id).by_id.values():
        for kind in ChangeKind:
            if event_id(container_id, rel.id, kind) in wanted:
                out.append(f"{kind.value} {rel.id} (created at seq {rel.cseq}, "
                           f"deleted at seq {rel.dseq or '-'})")
    return "; ".join(sorted(out)[:limit]) or f"{len(wanted)} unknown ids"


def events_by_subscription(events: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for e in events:
        out[e["data"]["subscription"]].add(e["id"])
    return dict(out)


# --- sinks ------------------------------------------------------------------------------------


def webhook_sink(name: str, url: str, secret: str) -> dict[str, Any]:
    """A webhook sink that retries fast and for long enough to outlast any outage here."""
    return {"name": name, "type": "webhook", "url": url, "secret": secret,
            "allow_insecure_http": True, "max_concurrency": 4, "timeout": "2s",
            "retry_schedule": ["100ms"] * 300,
            "circuit_breaker": {"failure_threshold": 5, "reset_after": "300ms"}}


def assert_webhook_calls(receiver: WebhookReceiver) -> int:
    """Every call was signed, carried one event, and its ``webhook-id`` is that event's id;
    redeliveries carry the same body. Returns how many calls were redeliveries.

    Two subscriptions on one container that share an endpoint send the same change twice, with
    the same id (it is the same change) and each its own ``data.subscription``.
    """
    assert receiver.bad_signatures == 0
    bodies: dict[tuple[str, str], bytes] = {}
    again = 0
    for call in receiver.calls:
        event = orjson.loads(call.body)
        assert call.webhook_id == event["id"], (call.webhook_id, event["id"])
        key = (call.webhook_id, event["data"]["subscription"])
        first = bodies.setdefault(key, call.body)
        if first is not call.body:
            again += 1
            assert first == call.body, (f"redelivery of {key} changed its body:\n"
                                        f"{first.decode()}\n{call.body.decode()}")
    return again


_KAFKA_ATTRS = {"ce_specversion": "specversion", "ce_id": "id", "ce_source": "source",
                "ce_type": "type", "ce_subject": "subject", "ce_time": "time",
                "content-type": "datacontenttype"}


def event_from_record(rec: ConsumerRecord) -> dict[str, Any]:
    """A binary-mode Kafka record as the structured CloudEvent it carries."""
    headers = {k: v.decode() for k, v in rec.headers}
    event: dict[str, Any] = {_KAFKA_ATTRS[k]: v for k, v in headers.items() if k in _KAFKA_ATTRS}
    assert headers["ce_snapshot"] in ("true", "false"), headers
    event["snapshot"] = headers["ce_snapshot"] == "true"
    event["data"] = orjson.loads(rec.value)
    assert_valid([event])
    assert rec.key is not None
    assert rec.key.decode() == event["subject"] == headers["ce_partitionkey"]
    return event

