"""The example consumers in examples/ work against a live notifier: a real broker, the simulator
over HTTP, the notifier and the examples as separate processes. Duplicates are provoked (a second
notifier with fresh state re-publishes every change) and must be absorbed by the examples'
deduplication; every event they hand over keeps the contract."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from notifier.simulator import Simulator
from tests.contract import assert_valid
from tests.integration.kafka_support import free_port
from tests.integration.main_job_support import (
    ROOT,
    base_config,
    child_env,
    filter_of,
    run_cli,
    sim_config,
    truth_live,
    wait_for,
    write_config,
)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
EXAMPLES = ROOT / "examples"
SUBS = [{"name": "project-a", "credential": "sim", "container_id": A, "sinks": ["out"]}]


async def run_example(script: str, *args: str, env: dict[str, str] | None = None,
                      within: float = 60.0) -> tuple[int, list[dict[str, Any]], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env or child_env(), cwd=str(ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, [orjson.loads(x) for x in out.splitlines() if x.strip()], err.decode()


async def test_kafka_consumer_sees_each_change_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    kafka = {"name": "out", "type": "kafka", "bootstrap_servers": kafka_bootstrap,
             "topic": topic, "create_topic": True}
    async with Simulator(sim_config([A], relationships=6)) as sim:
        for run in ("first", "again"):  # fresh state the second time: every event twice
            cfg = write_config(tmp_path, {**base_config(tmp_path / run, sim.url, SUBS,
                                                          sinks=[kafka])}, name=f"{run}.yaml")
            (tmp_path / run).mkdir()
            rc, _, err = await run_cli("run", "--config", str(cfg), "--once", within=60)
            assert rc == 0, err
        truth = truth_live(sim, A, filter_of({}))
    args = ("--bootstrap", kafka_bootstrap, "--topic", topic, "--group", f"g-{topic}",
            "--dedup-db", str(tmp_path / "seen.db"), "--exit-when-idle")
    rc, events, err = await run_example("kafka_consumer.py", *args)
    assert rc == 0, err
    assert len(events) == len(truth) == 6  # twelve records, six changes
    assert {e["subject"] for e in events} == truth
    assert_valid(events)
    # Offsets were committed and ids remembered: a restart hands over nothing again.
    rc, again, err = await run_example("kafka_consumer.py", *args)
    assert rc == 0, err
    assert again == []


async def test_webhook_receiver_verifies_and_deduplicates(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    env = {**child_env(), "WEBHOOK_SECRET": secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", str(port),
        "--dedup-db", str(tmp_path / "seen.db"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            lines.append(orjson.loads(line))

    reader = asyncio.create_task(read())
    try:
        async with aiohttp.ClientSession() as http:
            async def listening() -> bool:
                try:
                    async with http.post(url, data=b"{}", headers={
                            "webhook-id": "x", "webhook-timestamp": "0",
                            "webhook-signature": "v1,AAAA"}) as resp:
                        return resp.status == 401  # forged: refused
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(listening, 20, "the example receiver to listen")
            # Two sinks to the same receiver, single and batch mode: every change arrives twice.
            sinks = [{"name": name, "type": "webhook", "url": url, "secret": secret,
                      "allow_insecure_http": True, "mode": mode}
                     for name, mode in (("out", "single"), ("batched", "batch"))]
            subs = [{**SUBS[0], "sinks": ["out", "batched"]}]
            async with Simulator(sim_config([A], relationships=5)) as sim:
                cfg = write_config(tmp_path, base_config(tmp_path, sim.url, subs, sinks=sinks))
                rc, _, err = await run_cli("run", "--config", str(cfg), "--once", within=60)
                assert rc == 0, err
                truth = truth_live(sim, A, filter_of({}))
            await wait_for(lambda: len(lines) >= len(truth), 20, "the events to be handled")
            await asyncio.sleep(0.5)  # a late duplicate would show up here
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        reader.cancel()
    assert len(lines) == len(truth) == 5
    assert {e["subject"] for e in lines} == truth
    assert_valid(lines)
