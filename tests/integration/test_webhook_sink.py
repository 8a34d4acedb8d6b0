"""The webhook sink against a real receiver (verifying with ``standardwebhooks``) and a real
SQLite outbox: delivery and order, outages, random failures, 410, 429, dead letters and replay,
and a SIGKILL of the dispatcher with a full outbox."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from notifier.cli.webhooks import add_parser as add_webhooks_parser
from notifier.cli.webhooks import parse_time, webhooks_main
from notifier.config import WebhookSinkConfig, load_config
from notifier.core.events import ChangeKind, build_event
from notifier.errors import SinkConfigError
from notifier.metrics import Metrics
from notifier.simulator import Simulator
from notifier.sinks.webhook import WebhookSink
from notifier.source.models import Relationship
from notifier.state.base import OutboxItem
from notifier.state.sqlite import SqliteStateStore
from tests.integration.main_job_support import (
    base_config,
    check_stream_invariants,
    filter_of,
    read_jsonl,
    replay,
    sim_config,
    start_notifier,
    stop_process,
    truth_live,
    wait_for,
    write_config,
)
from tests.integration.webhook_receiver import WebhookReceiver

SINK = "hooks"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OLD_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
FAST = 0.05


def make_cfg(url: str, **overrides: Any) -> WebhookSinkConfig:
    """A validated webhook sink config with short timings."""
    fields: dict[str, Any] = {
        "name": SINK, "type": "webhook", "url": url, "secret": SECRET,
        "allow_insecure_http": True, "timeout": 2.0, "max_concurrency": 4,
        "retry_schedule": [FAST] * 30, "max_response_bytes": 4096,
        "circuit_breaker": {"failure_threshold": 5, "reset_after": 0.2},
    }
    fields.update(overrides)
    return WebhookSinkConfig.model_validate(fields)


def relationship(i: int, deleted: bool = False) -> Relationship:
    rid = f"rel-{i:04d}"
    raw = {
        "id": rid, "createdOn": "2024-05-01T10:00:00Z", "isReadOnly": False, "isService": False,
        "isDeleted": deleted, "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": f"a{i}",
             "createdOn": "2024-05-01T10:00:00Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": f"i{i}",
             "createdOn": "2024-05-01T10:00:00Z"},
        ],
    }
    if deleted:
        raw["deletedOn"] = "2024-05-02T10:00:00Z"
    return Relationship(
        id=rid, created_on="2024-05-01T10:00:00Z", is_deleted=deleted,
        deleted_on=raw.get("deletedOn"), raw=raw,  # type: ignore[arg-type]
    )


def make_items(n: int, deleted_every: int = 2, now: float | None = None) -> list[OutboxItem]:
    """``n`` created events, then a deleted event for every ``deleted_every``-th relationship
    (none if 0),
    as the pipeline writes them: payload = structured JSON, ordering key = relationship id."""
    now = time.time() if now is None else now
    changes = [(i, ChangeKind.CREATED) for i in range(n)]
    if deleted_every:
        changes += [(i, ChangeKind.DELETED) for i in range(0, n, deleted_every)]
    items = []
    for i, kind in changes:
        event = build_event(
            subscription="sub", container_id="c-1",
            relationship=relationship(i, kind is ChangeKind.DELETED), kind=kind,
            snapshot=False, seen_at="2024-05-02T10:00:00Z",
        )
        items.append(OutboxItem(
            sink=SINK, event_id=event.id, ordering_key=event.subject,
            payload=event.structured_json(), event_time=event.time, created_at=now,
        ))
    return items


async def fill(store: SqliteStateStore, items: list[OutboxItem], token: str = "t1") -> None:
    """Queue ``items`` the way the pipeline does: with a page's checkpoint."""
    await store.commit_page(
        "sub", "c-1", next_token=token, resync_cursor=None, in_resync=False, add_ids=(),
        remove_ids=(), outbox=items, changed=True, now=time.time(),
    )


def assert_per_key_order(receiver: WebhookReceiver, items: list[OutboxItem]) -> None:
    """Every delivery of an item precedes the first delivery of any later item of its key."""
    position: dict[str, list[int]] = {}
    for index, event_id in enumerate(receiver.event_ids()):
        position.setdefault(event_id, []).append(index)
    last_of_key: dict[str, int] = {}
    for item in items:
        if item.ordering_key in last_of_key:
            assert position[item.event_id][0] > last_of_key[item.ordering_key], item.ordering_key
        last_of_key[item.ordering_key] = position[item.event_id][-1]


def deliveries(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "notifier_webhook_deliveries_total", {"sink": SINK, "outcome": outcome}
    )
    return value or 0.0


async def wait_until(predicate: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    async with SqliteStateStore(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


def sink_for(cfg: Any, store: SqliteStateStore, metrics: Metrics, **kw: Any) -> WebhookSink:
    kw.setdefault("poll_interval", FAST)
    kw.setdefault("stats_interval", 0.2)
    return WebhookSink(SINK, cfg, store, metrics, **kw)


async def test_delivers_everything_in_order_signed(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    items = make_items(40)
    cfg = make_cfg(receiver.url, secret=None, secrets=[SECRET, OLD_SECRET],
                   headers={"X-Team": "field"})
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items))
        await wait_until(lambda: _pending(store, 0))
        assert sink.healthy()
    assert receiver.bad_signatures == 0
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)
    assert_per_key_order(receiver, items)
    for item in items:  # the body is the outbox payload, byte for byte
        assert receiver.bodies[item.event_id] == item.payload
    for call in receiver.calls:
        assert call.content_type == "application/cloudevents+json"
        assert call.webhook_id == orjson.loads(call.body)["id"]
        assert call.headers.get("X-Team") == "field"
        assert len(call.headers["webhook-signature"].split(" ")) == 2  # both secrets sign
    assert deliveries(metrics, "ok") == len(items)
    assert metrics.registry.get_sample_value("notifier_outbox_pending_events", {"sink": SINK}) == 0


async def _pending(store: SqliteStateStore, n: int) -> bool:
    return (await store.outbox_stats(SINK)).pending_count == n


async def _dead(store: SqliteStateStore, n: int) -> bool:
    return (await store.outbox_stats(SINK)).dead_count == n


async def test_batch_mode(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    items = make_items(30, deleted_every=3)
    async with sink_for(make_cfg(receiver.url, mode="batch", batch_max=7), store, metrics) as s:
        await fill(store, items)
        s.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items))
    assert receiver.bad_signatures == 0
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)
    assert_per_key_order(receiver, items)
    assert receiver.calls
    for call in receiver.calls:
        assert call.content_type == "application/cloudevents-batch+json"
        assert call.webhook_id.startswith("batch-")
        assert 1 <= len(orjson.loads(call.body)) <= 7
    assert len(receiver.calls) < len(items)


async def test_receiver_down_then_back_delivers_everything(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    items = make_items(30)
    await receiver.down()
    cfg = make_cfg(receiver.url, retry_schedule=[FAST] * 200)
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await asyncio.sleep(1.0)
        assert not sink.healthy()  # the circuit opened
        assert (await store.outbox_stats(SINK)).pending_count == len(items)
        await receiver.up()
        await receiver.wait_for(lambda: len(set(receiver.event_ids())) >= len(items))
        await wait_until(lambda: _pending(store, 0))
        await wait_until(lambda: _healthy(sink))
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)
    assert_per_key_order(receiver, items)
    assert (await store.outbox_stats(SINK)).dead_count == 0
    assert deliveries(metrics, "retry") >= 1


async def _healthy(sink: WebhookSink) -> bool:
    return sink.healthy()


async def test_random_failures_redelivered_with_same_id(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "fail_random"
    receiver.fail_rate = 0.1
    items = make_items(100, deleted_every=4)
    cfg = make_cfg(receiver.url, circuit_breaker={
        "failure_threshold": 10, "reset_after": 0.1})
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items), within=60)
        await wait_until(lambda: _pending(store, 0))
    assert receiver.bad_signatures == 0
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)  # no duplicates
    assert_per_key_order(receiver, items)
    failed = [c for c in receiver.calls if c.status == 500]
    assert failed, "the receiver should have failed some calls"
    for call in failed:  # every failed call came again, same id and same body, and succeeded
        again = [c for c in receiver.calls if c.webhook_id == call.webhook_id and c.at > call.at]
        assert any(c.status == 200 for c in again)
        assert all(c.body == call.body for c in again)
    assert deliveries(metrics, "retry") == len(failed)


async def test_gone_stops_delivery_and_keeps_events(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.mode = "gone"
    items = make_items(10)
    caplog.set_level(logging.INFO, logger="notifier")
    async with sink_for(make_cfg(receiver.url), store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await receiver.wait_for(lambda: any(c.status == 410 for c in receiver.calls))
        await asyncio.sleep(0.5)
        calls = len(receiver.calls)
        await asyncio.sleep(0.5)
        assert len(receiver.calls) == calls <= 4  # only the calls already in flight
        assert not sink.healthy()
        stats = await store.outbox_stats(SINK)
        assert (stats.pending_count, stats.dead_count) == (len(items), 0)
    gone_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "410" in r.message]
    assert len(gone_logs) == 1
    assert deliveries(metrics, "gone") >= 1
    assert metrics.registry.get_sample_value("notifier_sink_up", {"sink": SINK}) == 0
    # The operator fixes the endpoint and restarts: everything kept goes out.
    receiver.mode = "ok"
    async with sink_for(make_cfg(receiver.url), store, metrics):
        await receiver.wait_for(lambda: len(receiver.events) >= len(items))
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)


async def test_rate_limited_honours_retry_after_without_spending_attempts(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "rate_limited"
    receiver.retry_after = "1"
    receiver.rate_limit_calls = 3
    items = make_items(3, deleted_every=0)
    # An empty schedule: any attempt spent on a failure would dead-letter the event at once.
    cfg = make_cfg(receiver.url, retry_schedule=[], max_concurrency=1)
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items))
    limited = [c for c in receiver.calls if c.status == 429]
    ok = [c for c in receiver.calls if c.status == 200]
    assert len(limited) == 3
    assert (await store.outbox_stats(SINK)).dead_count == 0
    # The endpoint paused for Retry-After after each 429.
    for call in limited:
        later = [c for c in receiver.calls if c.at > call.at]
        assert min(c.at for c in later) - call.at >= 0.9
    assert sorted(c.webhook_id for c in ok) == sorted(i.event_id for i in items)
    assert deliveries(metrics, "rate_limited") == 3


async def test_dead_letter_then_replay(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "fail"
    items = make_items(2, deleted_every=1)  # rel-0 created, rel-1 created, rel-0/1 deleted
    cfg = make_cfg(receiver.url, retry_schedule=[FAST, FAST], circuit_breaker={
        "failure_threshold": 100, "reset_after": 0.1})
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await wait_until(lambda: _dead(store, len(items)))
        tries = Counter(c.webhook_id for c in receiver.calls)
        assert tries == {i.event_id: 3 for i in items}  # 1 + len(schedule) attempts each
        dead = await store.dlq_list(sink=SINK)
        assert [d.event_id for d in dead] == [i.event_id for i in items]
        assert all("HTTP 500" in (d.dead_reason or "") for d in dead)
        assert metrics.registry.get_sample_value(
            "notifier_outbox_dead_lettered_total", {"sink": SINK}) == len(items)
        receiver.mode = "ok"
        assert await store.dlq_replay(sink=SINK) == len(items)
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.events) >= len(items))
        await wait_until(lambda: _pending(store, 0))
    assert sorted(receiver.event_ids()) == sorted(i.event_id for i in items)
    assert (await store.outbox_stats(SINK)).dead_count == 0


async def test_redirect_is_a_failure_not_followed(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "redirect"
    items = make_items(1, deleted_every=0)
    async with sink_for(make_cfg(receiver.url, retry_schedule=[]), store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await wait_until(lambda: _dead(store, 1))
    assert [c.status for c in receiver.calls] == [307]
    (dead,) = await store.dlq_list(sink=SINK)
    assert "307" in (dead.dead_reason or "")


async def test_slow_receiver_times_out_and_never_blocks_the_outbox(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics
) -> None:
    receiver.mode = "slow"
    receiver.slow_seconds = 1.0
    cfg = make_cfg(receiver.url, timeout=0.2, retry_schedule=[FAST] * 100)
    items = make_items(8)
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items[:4])
        sink.notify()
        await receiver.wait_for(lambda: len(receiver.calls) >= 1)
        # The pipeline keeps committing pages while deliveries hang.
        started = time.monotonic()
        await fill(store, items[4:], token="t2")
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.5)
        rows = await store.outbox_fetch_due(SINK, time.time() + 3600, 100)
        assert any("timeout" in (r.last_error or "") for r in rows)
        receiver.mode = "ok"
        await wait_until(lambda: _pending(store, 0))
    assert set(receiver.event_ids()) == {i.event_id for i in items}


async def test_refuses_plain_http_at_runtime(store: SqliteStateStore, metrics: Metrics) -> None:
    # The config refuses it too; the sink checks again, whatever config object it is given.
    cfg = make_cfg("http://127.0.0.1:9/hooks").model_copy(update={"allow_insecure_http": False})
    with pytest.raises(SinkConfigError, match="https") as info:
        WebhookSink(SINK, cfg, store, metrics)
    assert "127.0.0.1" not in str(info.value)


async def test_secrets_and_signatures_never_logged(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.mode = "fail"
    cfg = make_cfg(receiver.url, retry_schedule=[FAST], secret=None, secrets=[OLD_SECRET, SECRET])
    items = make_items(3)
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items)
        sink.notify()
        await wait_until(lambda: _dead(store, len(items)))
    assert receiver.calls
    text = caplog.text
    for secret in (SECRET, OLD_SECRET):
        assert secret.removeprefix("whsec_") not in text
    for call in receiver.calls:
        for sig in call.headers["webhook-signature"].split(" "):
            assert sig.split(",")[1] not in text
    for row in await store.dlq_list(sink=SINK):
        assert "whsec_" not in (row.dead_reason or "")


async def test_header_values_are_secrets_sent_from_a_file_and_never_echoed(
    receiver: WebhookReceiver, store: SqliteStateStore, metrics: Metrics,
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "Bearer sk-live-0123456789abcdef"
    (tmp_path / "headers").write_text(f"Authorization: {token}\nX-Team: field\n")
    cfg = make_cfg(receiver.url, retry_schedule=[FAST], headers_file=str(tmp_path / "headers"))
    assert "sk-live" not in repr(cfg)
    items = make_items(4, deleted_every=0)
    async with sink_for(cfg, store, metrics) as sink:
        await fill(store, items[:2])
        sink.notify()
        await wait_until(lambda: _pending(store, 0))
        receiver.mode = "echo_auth"  # the receiver now quotes the header in its 401 body
        await fill(store, items[2:], token="t2")
        sink.notify()
        await wait_until(lambda: _dead(store, 2))
        assert len(receiver.events) == 2
    assert all(c.headers["Authorization"] == token for c in receiver.calls)
    assert all(c.headers["X-Team"] == "field" for c in receiver.calls)
    dead = await store.dlq_list(sink=SINK)
    assert all("[redacted]" in (d.dead_reason or "") for d in dead), dead
    assert "sk-live" not in caplog.text
    assert not any("sk-live" in (d.dead_reason or "") + (d.last_error or "") for d in dead)


DISPATCHER_SCRIPT = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from notifier.config import WebhookSinkConfig, load_config
from notifier.metrics import Metrics
from notifier.simulator import Simulator
from notifier.sinks.webhook import WebhookSink
from notifier.cli.webhooks import add_parser as add_webhooks_parser
from notifier.cli.webhooks import parse_time, webhooks_main
from notifier.state.sqlite import SqliteStateStore

async def main(path, url, secret):
    cfg = WebhookSinkConfig.model_validate({
        "name": "hooks", "url": url, "secret": secret, "allow_insecure_http": True,
        "max_concurrency": 2, "retry_schedule": ["50ms"] * 10})
    async with SqliteStateStore(path) as store:
        async with WebhookSink("hooks", cfg, store, Metrics(CollectorRegistry(), runtime=False),
                               poll_interval=0.05):
            print("running", flush=True)
            await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_sigkill_with_full_outbox_loses_nothing(
    receiver: WebhookReceiver, tmp_path: Path, metrics: Metrics
) -> None:
    path = tmp_path / "state.db"
    items = make_items(40)
    async with SqliteStateStore(path) as store:  # filled, closed, nothing delivered
        await fill(store, items)
    receiver.mode = "slow"
    receiver.slow_seconds = 0.05
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DISPATCHER_SCRIPT, str(path), receiver.url, SECRET,
        stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).parents[2]),
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"running"
        await receiver.wait_for(lambda: len(receiver.events) >= 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = len(set(receiver.event_ids()))
    assert 10 <= before < len(items)
    receiver.mode = "ok"
    async with SqliteStateStore(path) as store:
        assert (await store.outbox_stats(SINK)).pending_count >= len(items) - before
        async with sink_for(make_cfg(receiver.url), store, metrics):
            await receiver.wait_for(lambda: len(set(receiver.event_ids())) >= len(items))
            await wait_until(lambda: _pending(store, 0))
    assert receiver.bad_signatures == 0
    assert set(receiver.event_ids()) == {i.event_id for i in items}
    for item in items:
        assert receiver.bodies[item.event_id] == item.payload
    assert_per_key_order(receiver, items)


# -- notifier webhooks (dlq list / replay, redeliver) -------------------------------------------

CONFIG_YAML = """
credentials:
  - {{name: main, access_token: not-used}}
state:
  path: {state}
subscriptions:
  - {{name: sub, credential: main, container_id: 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10,
     sinks: [hooks]}}
sinks:
  - name: hooks
    type: webhook
    url: {url}
    secret: {secret}
    allow_insecure_http: true
    retry_schedule: []
  - {{name: archive, type: jsonl, path: {archive}}}
"""


def run_admin(*argv: str) -> tuple[int, str, str]:
    """Parse ``notifier webhooks ...`` with the admin parser and run it; (status, out, err)."""
    parser = argparse.ArgumentParser(prog="notifier")
    add_webhooks_parser(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    status = webhooks_main(parser.parse_args(["webhooks", *argv]), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


async def test_admin_lists_replays_and_redelivers(
    receiver: WebhookReceiver, tmp_path: Path, metrics: Metrics
) -> None:
    state = tmp_path / "state.db"
    config = tmp_path / "notifier.yaml"
    config.write_text(CONFIG_YAML.format(
        state=state, url=receiver.url, secret=SECRET, archive=tmp_path / "a.jsonl"))
    cfg = load_config(config).sink_named(SINK)
    assert isinstance(cfg, WebhookSinkConfig)
    items = make_items(3, deleted_every=0)
    ids = [i.event_id for i in items]

    async def admin(*argv: str) -> tuple[int, str, str]:  # asyncio.run needs its own thread
        return await asyncio.to_thread(run_admin, "--config", str(config), *argv)

    receiver.mode = "fail"
    async with SqliteStateStore(state) as store:
        async with sink_for(cfg, store, metrics) as sink:
            await fill(store, items)
            sink.notify()
            await wait_until(lambda: _dead(store, len(items)))

        status, out, err = await admin("dlq", "list", "--json")
        assert (status, err) == (0, "")
        lines = [orjson.loads(line) for line in out.splitlines()]
        assert [line["event_id"] for line in lines] == ids
        assert all(line["kind"] == "created" and "HTTP 500" in line["reason"] for line in lines)

        status, out, _ = await admin("dlq", "list", "--sink", SINK, "--since", "1h")
        assert status == 0
        assert out.splitlines()[0].split()[:3] == ["DEAD", "AT", "SINK"]
        assert all(any(i in line for line in out.splitlines()) for i in ids)

        status, out, _ = await admin("dlq", "list", "--until", "2000-01-01T00:00:00Z")
        assert (status, out.strip()) == (0, "no dead-lettered events")

        status, out, _ = await admin("dlq", "replay", "--sink", SINK, "--json")
        assert status == 0
        assert orjson.loads(out)["count"] == len(items)
        stats = await store.outbox_stats(SINK)
        assert (stats.pending_count, stats.dead_count) == (len(items), 0)

        receiver.mode = "ok"
        async with sink_for(cfg, store, metrics):
            await receiver.wait_for(lambda: len(receiver.events) == len(items))
            await wait_until(lambda: _pending(store, 0))

            # Re-deliver the last hour: the same events again, with the same ids.
            status, out, _ = await admin("redeliver", "--sink", SINK, "--since", "1h")
            assert (status, out.split(":")[0]) == (0, "queued for redelivery")
            assert f" {len(items)} events" in out
            await receiver.wait_for(lambda: len(receiver.events) == 2 * len(items))
        assert Counter(receiver.event_ids()) == dict.fromkeys(ids, 2)
        assert sorted(c.webhook_id for c in receiver.calls if c.status == 200) == sorted(ids * 2)

    for argv, message in [
        (("dlq", "list", "--sink", "archive"), "no webhook sink named 'archive'"),
        (("dlq", "list", "--since", "yesterday"), "invalid time 'yesterday'"),
        (("dlq", "list", "--since", "2024-05-01T10:00:00"), "needs a zone"),
        (("dlq", "replay", "--since", "1h", "--until", "2h"), "--since must be before --until"),
    ]:
        status, out, err = await admin(*argv)
        assert (status, out) == (2, ""), argv
        assert message in err, argv


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", 1_700_000_000.0),
        ("2h", 1_700_000_000.0 - 7200),
        ("90s", 1_700_000_000.0 - 90),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, 1_700_000_000.0) == expected


# -- the whole notifier: killed with a full outbox -----------------------------------------------

CONTAINER = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


@pytest.mark.timeout(90)
async def test_notifier_killed_with_full_outbox_delivers_everything_after_restart(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """``notifier run`` against the simulator while the receiver is down: the outbox fills up;
    SIGKILL; the receiver comes back; a restart delivers every change; a second SIGKILL in the
    middle of delivery loses nothing either."""
    subs = [{"name": "s", "credential": "sim", "container_id": CONTAINER,
             "sinks": ["hooks", "archive"]}]
    hooks = {"name": SINK, "type": "webhook", "url": receiver.url, "secret": SECRET,
             "allow_insecure_http": True, "max_concurrency": 2, "timeout": "2s",
             "retry_schedule": ["50ms"] * 200,
             "circuit_breaker": {"failure_threshold": 3, "reset_after": "200ms"}}
    archive = tmp_path / "events.jsonl"
    log = tmp_path / "notifier.log"
    await receiver.down()
    async with Simulator(sim_config([CONTAINER], relationships=40, page_size=5)) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[
            hooks, {"name": "archive", "type": "jsonl", "path": str(archive)}])
        config = write_config(tmp_path, data)
        proc = await start_notifier(config, log=log)
        try:
            await wait_for(caught_up(sim, subs, archive), 30, "the bootstrap")
            sim.state.set_knobs(change_rate=20.0)
            await asyncio.sleep(1.0)
            sim.state.set_knobs(change_rate=0.0)
            await wait_for(caught_up(sim, subs, archive), 30, "the changes")
        finally:
            assert await stop_process(proc, signal.SIGKILL) == -signal.SIGKILL
        want = {e["id"] for e in read_jsonl(archive).events}
        async with SqliteStateStore(tmp_path / "state.db") as store:
            assert (await store.outbox_stats(SINK)).pending_count == len(want)
        assert receiver.calls == []

        receiver.mode = "slow"  # slow enough to be killed in the middle of delivering
        receiver.slow_seconds = 0.02
        await receiver.up()
        proc = await start_notifier(config, log=log)
        try:
            await receiver.wait_for(lambda: len(receiver.events) >= len(want) // 3, within=30)
        finally:
            assert await stop_process(proc, signal.SIGKILL) == -signal.SIGKILL
        assert len(set(receiver.event_ids())) < len(want)

        receiver.mode = "ok"
        proc = await start_notifier(config, log=log)
        try:
            await receiver.wait_for(lambda: set(receiver.event_ids()) >= want, within=30)
        finally:
            assert await stop_process(proc, signal.SIGTERM) == 0
        assert receiver.bad_signatures == 0
        assert set(receiver.event_ids()) == want
        check_stream_invariants(receiver.events)
        assert nonempty(replay(receiver.events)) == nonempty(truth(sim, subs))
    no_traceback(log)


def truth(sim: Simulator, subs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    return {(s["name"], s["container_id"]): truth_live(sim, s["container_id"], filter_of(s))
            for s in subs}


def caught_up(sim: Simulator, subs: list[dict[str, Any]], path: Path) -> Any:
    return lambda: nonempty(replay(read_jsonl(path).events)) == nonempty(truth(sim, subs))


def nonempty(d: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    return {k: v for k, v in d.items() if v}


def no_traceback(log: Path) -> None:
    text = log.read_text(errors="replace") if log.exists() else ""
    assert "Traceback" not in text, text[-3000:]
    assert SECRET.removeprefix("whsec_") not in text
