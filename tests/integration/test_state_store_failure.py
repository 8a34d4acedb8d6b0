"""The service while its state store fails, with real failures of a real SQLite file:

* another connection holds the file's write lock past ``state.busy_timeout`` (SQLITE_BUSY);
* the service's process may write no byte to any file (its file-size limit set to 0 from
  outside, ``prlimit``: every write fails as on a full or failing disk, SQLITE_IOERR).

Work pauses with backoff, ``/readyz`` answers 503 and the metrics say so, the service never
exits, and once the store works again every change is delivered (duplicates only under the
same event id, the at-least-once contract) and readiness comes back by itself."""

from __future__ import annotations

import asyncio
import resource
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator import Simulator
from notifier.state.sqlite import SqliteStateStore
from tests.integration.fault_support import (
    NotifierProcess,
    assert_delivery,
    assert_no_traceback,
    caught_up,
    secret_sim_config,
    seqs,
    webhook_secret,
    webhook_sink,
)
from tests.integration.kafka_support import free_port
from tests.integration.main_job_support import (
    base_config,
    check_stream_invariants,
    filter_of,
    read_jsonl,
    replay,
    sim_config,
    truth_live,
    wait_for,
    write_config,
)
from tests.integration.test_metrics_running import scrape, value
from tests.integration.webhook_receiver import WebhookReceiver

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"


def probes(session: aiohttp.ClientSession, url: str
           ) -> tuple[Callable[[int], Awaitable[bool]], Callable[[], Awaitable[dict[Any, float]]]]:
    """``readyz_is(status)`` and ``metrics()`` of the service at ``url``."""

    async def readyz_is(status: int) -> bool:
        async with session.get(url + "/readyz") as resp:
            return resp.status == status

    async def metrics() -> dict[Any, float]:
        return (await scrape(session, url))[1]

    return readyz_is, metrics


@pytest.mark.timeout(90)
async def test_a_locked_state_store_pauses_the_service_which_recovers_losing_nothing(
    tmp_path: Path,
) -> None:
    subs = [{"name": "a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
            {"name": "b", "credential": "sim", "container_id": B, "sinks": ["archive"]}]
    out = tmp_path / "events.jsonl"

    def delivered() -> bool:
        return replay(read_jsonl(out).events) == {
            ("a", A): truth_live(sim, A, filter_of({})),
            ("b", B): truth_live(sim, B, filter_of({}))}

    async with Simulator(sim_config([A, B], relationships=10)) as sim:
        data = base_config(tmp_path, sim.url, subs,
                           metrics={"enabled": True, "listen": "127.0.0.1:0"})
        data["state"]["busy_timeout"] = "200ms"
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        locker = sqlite3.connect(tmp_path / "state.db", isolation_level=None,
                                 check_same_thread=False)
        try:
            await wait_for(app.ready.wait, 20, "the first cycle")
            await wait_for(delivered, 20, "the bootstrap")
            assert app.server is not None
            async with aiohttp.ClientSession() as session:
                readyz_is, metrics = probes(session, app.server.url)
                await wait_for(lambda: readyz_is(200), 10, "/readyz 200")
                await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # the write lock
                sim.state.create_relationships(A, 5)
                sim.state.delete_random(B, 2)

                async def busy_counted() -> bool:
                    return value(await metrics(), "notifier_state_store_errors_total",
                                 kind="busy") >= 2

                await wait_for(busy_counted, 30, "state store errors to be counted")
                assert value(await metrics(), "notifier_state_store_up") == 0
                assert await readyz_is(503)
                await asyncio.sleep(2.0)  # failed rounds of retries: the service stays up
                assert not task.done(), task.result() if task.done() else None

                await asyncio.to_thread(locker.execute, "ROLLBACK")
                await wait_for(delivered, 60, "every change after the lock is released")
                await wait_for(lambda: readyz_is(200), 30, "/readyz 200 again")
                assert value(await metrics(), "notifier_state_store_up") == 1
        finally:
            locker.close()
            app.request_stop()
            rc = await asyncio.wait_for(task, 30)
        assert rc == 0
    check_stream_invariants(read_jsonl(out).events)


@pytest.mark.timeout(120)
async def test_a_store_that_cannot_write_a_byte_pauses_the_service_and_webhooks_catch_up(
    tmp_path: Path,
) -> None:
    """The whole process is refused file writes for a while (as on a full or failing disk):
    checkpoints and webhook outcomes cannot be stored. The service keeps running, says so,
    and delivers every change through the webhook outbox once writes work again."""
    secret = webhook_secret()
    subs: list[dict[str, Any]] = [
        {"name": "a", "credential": "sim", "container_id": A, "sinks": ["hooks"]},
        {"name": "b", "credential": "sim", "container_id": B, "sinks": ["hooks"]}]
    port = free_port()
    async with (
        WebhookReceiver(secret, fail_rate=0.0) as receiver,
        Simulator(secret_sim_config([A, B], relationships=20, page_size=5)) as sim,
    ):
        data = base_config(tmp_path, sim.url, subs,
                           sinks=[webhook_sink("hooks", receiver.url, secret)],
                           metrics={"enabled": True, "listen": f"127.0.0.1:{port}"})
        data["credentials"][0]["access_token"] = sim.config.access_token
        cfg = write_config(tmp_path, data)
        start = seqs(sim)
        async with NotifierProcess(cfg, tmp_path) as notifier, aiohttp.ClientSession() as http:
            readyz_is, metrics = probes(http, f"http://127.0.0.1:{port}")
            await receiver.wait_for(lambda: caught_up(sim, subs, receiver.events), within=30)
            caught = seqs(sim)
            await wait_for(lambda: readyz_is(200), 10, "/readyz 200")
            assert notifier.proc is not None
            pid = notifier.proc.pid
            before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, before[1]))  # no byte written
            try:
                sim.state.create_relationships(A, 6)
                sim.state.delete_random(B, 3)

                async def failing() -> bool:
                    now = await metrics()
                    return (value(now, "notifier_state_store_up") == 0 and sum(
                        value(now, "notifier_state_store_errors_total", kind=k)
                        for k in ("io", "full")) >= 2)

                await wait_for(failing, 30, "the state store failures to show")
                assert await readyz_is(503)
                await asyncio.sleep(2.0)
                assert notifier.running, notifier.output()[-3000:]
                # The outbox is written with the checkpoint: nothing new could go out.
                assert not caught_up(sim, subs, receiver.events)
            finally:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, before)
            await receiver.wait_for(lambda: caught_up(sim, subs, receiver.events), within=60)
            await wait_for(lambda: readyz_is(200), 30, "/readyz 200 again")
            assert value(await metrics(), "notifier_state_store_up") == 1
            assert await notifier.stop() == 0
        assert_delivery(sim, subs, receiver.events, since_start=start, since_caught=caught,
                        what="webhook")
        text = notifier.output()
        assert_no_traceback(text)
        assert "state store works again after" in text


@pytest.mark.timeout(60)
async def test_health_answers_while_the_store_opens_and_readiness_waits_for_it(
    tmp_path: Path,
) -> None:
    """The store opens in its own thread, and can take long: a schema migration of a large file
    takes minutes, longer than a startup probe waits. /healthz answers meanwhile (the loop
    runs) and /readyz says 503 naming the store, until it is open. Here the open waits for
    another connection's write lock (within ``state.busy_timeout``)."""
    path = tmp_path / "state.db"
    async with SqliteStateStore(path):  # a state file (WAL) that the service will open
        pass
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
    subs = [{"name": "a", "credential": "sim", "container_id": A, "sinks": ["archive"]}]
    async with Simulator(sim_config([A], relationships=3)) as sim:
        data = base_config(tmp_path, sim.url, subs,
                           metrics={"enabled": True, "listen": "127.0.0.1:0"})
        data["state"]["busy_timeout"] = "30s"
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            await wait_for(lambda: app.server is not None, 20, "the metrics server")
            assert app.server is not None
            async with aiohttp.ClientSession() as session:
                await asyncio.sleep(0.5)
                async with session.get(app.server.url + "/healthz") as resp:
                    assert resp.status == 200
                async with session.get(app.server.url + "/readyz") as resp:
                    assert resp.status == 503
                    assert "store" in (await resp.json())["not_ready"]
                assert app.store is None, "the store is still opening"
                await asyncio.to_thread(locker.execute, "ROLLBACK")
                readyz_is, _ = probes(session, app.server.url)
                await wait_for(lambda: readyz_is(200), 30, "/readyz 200 once the store is open")
        finally:
            locker.close()
            app.request_stop()
            rc = await asyncio.wait_for(task, 30)
        assert rc == 0
