"""Guards around the state file and the source, as a user meets them: one process per state
file (two real processes), a private state file, plain-HTTP refusal, oversized pages."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    base_config,
    read_jsonl,
    run_cli,
    sim_config,
    start_notifier,
    status_json,
    stop_process,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"


def _subs(*containers: str) -> list[dict[str, Any]]:
    return [{"name": f"s{i}", "credential": "sim", "container_id": c, "sinks": ["archive"]}
            for i, c in enumerate(containers)]


async def test_a_second_process_on_the_same_state_file_exits_2_naming_the_holder(
    tmp_path: Path,
) -> None:
    async with Simulator(sim_config([A], relationships=20)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, _subs(A)))
        log = tmp_path / "service.log"
        service = await start_notifier(cfg, log=log)
        try:
            await wait_for(lambda: len(read_jsonl(tmp_path / "events.jsonl").events) == 20,
                           30, "the service's bootstrap")
            rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
            assert rc == 2, err
            assert "Traceback" not in err
            assert f"pid {service.pid}" in err
            assert f"host {socket.gethostname()}" in err
            assert "-m notifier run --config" in err
            assert str(cfg) in err
            # Changing the stored state under the running service is refused the same way.
            rc, _, err = await run_cli("state", "--config", str(cfg), "forget", "gone")
            assert rc == 2, err
            assert f"pid {service.pid}" in err
            # The refused processes changed nothing: the service keeps running and publishing.
            sim.state.create_relationships(A, 3)
            await wait_for(lambda: len(read_jsonl(tmp_path / "events.jsonl").events) == 23,
                           30, "the service to go on after the refused second process")
            assert service.returncode is None
        finally:
            assert await stop_process(service) == 0
        # Once the holder has gone, the lock is free again.
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        rc, _, err = await run_cli("state", "--config", str(cfg), "forget", "gone")
        assert rc == 1, err  # allowed now; there is simply no such subscription
        assert "no state for subscription 'gone'" in err


async def test_state_file_and_its_lock_are_private_to_the_owner(tmp_path: Path) -> None:
    async with Simulator(sim_config([A], relationships=5)) as sim:
        data = base_config(tmp_path, sim.url, _subs(A))
        data["state"] = {"path": str(tmp_path / "state" / "notifier.db")}
        cfg = write_config(tmp_path, data)
        old = os.umask(0o022)
        try:
            rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        finally:
            os.umask(old)
        assert rc == 0, err
        files = sorted((tmp_path / "state").iterdir())
        assert {f.name for f in files} >= {"notifier.db", "notifier.db.lock"}
        for f in files:  # the database, its WAL/SHM files and the lock
            mode = stat.S_IMODE(f.stat().st_mode)
            assert mode & 0o077 == 0, f"{f.name} is {oct(mode)}"


async def test_a_world_readable_state_file_is_made_private(tmp_path: Path) -> None:
    async with Simulator(sim_config([A], relationships=5)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, _subs(A)))
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        db = tmp_path / "state.db"
        db.chmod(0o644)
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        assert stat.S_IMODE(db.stat().st_mode) == 0o600


@pytest.mark.parametrize("field", ["base_url", "token_url"])
async def test_plain_http_source_is_refused_unless_allowed(tmp_path: Path, field: str) -> None:
    data = base_config(tmp_path, "https://developer.api.autodesk.com", _subs(A))
    data["source"][field] = "http://127.0.0.1:9"
    data["source"].pop("allow_insecure_http")
    cfg = write_config(tmp_path, data)
    rc, _, err = await run_cli("check-config", "--config", str(cfg))
    assert rc == 2
    assert f"source.{field}" in err
    assert "https://" in err
    assert "allow_insecure_http" in err
    data["source"]["allow_insecure_http"] = True
    rc, _, err = await run_cli("check-config", "--config", str(write_config(tmp_path, data)))
    assert rc == 0, err


async def test_an_oversized_page_quarantines_only_its_stream(tmp_path: Path) -> None:
    async with Simulator(sim_config([A, B], relationships=0)) as sim:
        sim.state.create_relationships(A, 40)  # A's first page is ~20 KiB, B's is empty
        data = base_config(tmp_path, sim.url, _subs(A, B))
        data["source"]["max_response_bytes"] = "4KiB"
        cfg = write_config(tmp_path, data)
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 1, err
        assert "Traceback" not in err
        assert "exceeds the limit of 4096 bytes" in err
        rows = await status_json(cfg)
        assert rows[("s0", A)]["quarantine_reason"] == "malformed_page"
        assert rows[("s1", B)]["quarantine_reason"] is None
        assert rows[("s1", B)]["bootstrapped"]
        assert read_jsonl(tmp_path / "events.jsonl").events == []
        # Raised to fit, the same pass drains A completely: nothing was lost.
        data["source"]["max_response_bytes"] = "1MiB"
        rc, _, err = await run_cli("run", "--config", str(write_config(tmp_path, data)),
                                   "--once")
        assert rc == 0, err
        assert len(read_jsonl(tmp_path / "events.jsonl").events) == 40


async def test_two_stores_in_one_process_refuse_the_same_file(tmp_path: Path) -> None:
    from notifier.errors import StateLockedError
    from notifier.state.lock import StateLock

    with StateLock(tmp_path / "s.db"):
        with pytest.raises(StateLockedError) as info:
            StateLock(tmp_path / "s.db").acquire()
        assert f"pid {os.getpid()}" in str(info.value)
    with StateLock(tmp_path / "s.db"):  # released on exit
        await asyncio.sleep(0)
