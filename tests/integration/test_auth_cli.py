"""``notifier auth login`` and ``notifier auth status`` end to end: real processes, the
simulator's authorize and token endpoints, a real state file. The user's browser is played by an
HTTP client that opens the printed URL and follows the redirect to the login's listener."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from notifier.simulator import Simulator
from notifier.simulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from notifier.source.auth import basic_authorization
from tests.integration.main_job_support import (
    ROOT,
    base_config,
    child_env,
    read_jsonl,
    run_cli,
    sim_config,
    write_config,
)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
URL = re.compile(r"^\s+(http://\S+/authentication/v2/authorize\?\S+)$", re.MULTILINE)


def config(tmp_path: Path, sim: Simulator) -> Path:
    data = base_config(tmp_path, sim.url, [
        {"name": "project-a", "credential": "main", "container_id": A, "sinks": ["archive"]}])
    # Three-legged without a seed: `auth login` provides the first refresh token.
    data["credentials"] = [{"name": "main", "client_id": DEFAULT_CLIENT_ID,
                            "client_secret": DEFAULT_CLIENT_SECRET}]
    return write_config(tmp_path, data)


async def login(cfg: Path, *extra: str, within: float = 30.0) -> tuple[int, str, str]:
    """Run ``auth login``; open the URL it prints like a browser would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "auth", "login", "--config", str(cfg),
        "--credential", "main", "--port", "0", "--no-browser", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
        cwd=str(ROOT))
    assert proc.stderr is not None
    assert proc.stdout is not None
    err = ""
    try:
        async with asyncio.timeout(within):
            while (match := URL.search(err)) is None:
                line = await proc.stderr.readline()
                assert line, f"auth login exited before printing a URL:\n{err}"
                err += line.decode()
            async with aiohttp.ClientSession() as browser, browser.get(match[1]) as page:
                assert page.status == 200, await page.text()
                assert "Signed in" in await page.text()
            out, rest = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err + rest.decode()


async def status(cfg: Path) -> tuple[int, dict[str, Any]]:
    rc, out, err = await run_cli("auth", "status", "--config", str(cfg), "--json")
    assert "Traceback" not in err
    (line,) = out.splitlines()
    return rc, orjson.loads(line)


def stored_token(tmp_path: Path) -> str:
    with sqlite3.connect(tmp_path / "state.db") as conn:
        (token,) = conn.execute(
            "SELECT refresh_token FROM refresh_tokens WHERE credential = 'main'").fetchone()
    return str(token)


async def test_login_stores_a_token_the_notifier_runs_on_and_status_follows(
        tmp_path: Path) -> None:
    async with Simulator(sim_config([A], relationships=4)) as sim:
        cfg = config(tmp_path, sim)
        rc, st = await status(cfg)
        assert rc == 1  # dead: no refresh token at all
        assert st["state"] == "dead"
        assert "auth login" in st["detail"]

        rc, out, err = await login(cfg)
        assert rc == 0, err
        assert out == ""  # nothing secret on stdout unless --print
        assert "callback URL: http://127.0.0.1:" in err
        assert "scope=data%3Aread" in err
        token = stored_token(tmp_path)
        assert token not in err
        assert sim.state.auth.refresh_token_state(token) == "fresh"

        rc, st = await status(cfg)
        assert rc == 0, st
        assert st["state"] == "ok"
        now = time.time()
        assert now - 60 < st["token_issued_at"] <= now
        assert st["token_expires_at"] == st["token_issued_at"] + 15 * 86400
        assert now - 60 < st["last_refresh_at"] <= now

        # The notifier runs on it: events delivered, the token rotated and recorded.
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        assert len(read_jsonl(tmp_path / "events.jsonl").events) == 4
        assert sim.state.auth.refresh_token_state(token) == "spent"
        rotated = stored_token(tmp_path)
        assert sim.state.auth.refresh_token_state(rotated) == "fresh"
        rc, out, _ = await run_cli("auth", "status", "--config", str(cfg))
        assert rc == 0
        header, row = out.splitlines()
        assert header.split()[:2] == ["CREDENTIAL", "STATE"]
        assert row.split()[:2] == ["main", "ok"]

        # Someone else spends the stored token: the credential dies, and status says so.
        async with aiohttp.ClientSession() as session, session.post(
                f"{sim.url}/authentication/v2/token",
                data={"grant_type": "refresh_token", "refresh_token": rotated},
                headers={"Authorization": basic_authorization(DEFAULT_CLIENT_ID,
                                                              DEFAULT_CLIENT_SECRET)}) as resp:
            assert resp.status == 200
        _, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert "invalid_grant" in err
        assert "notifier auth login --config FILE --credential main" in err
        rc, st = await status(cfg)
        assert rc == 1
        assert st["state"] == "dead"
        assert st["last_error"] == "invalid_grant"

        # Re-seeding with --print: the token on stdout, once; the state is not touched.
        rc, out, err = await login(cfg, "--print")
        assert rc == 0, err
        printed = out.strip()
        assert sim.state.auth.refresh_token_state(printed) == "fresh"
        assert printed not in err
        assert stored_token(tmp_path) == rotated
        rc, st = await status(cfg)
        assert rc == 1  # still dead until the printed token is configured


async def test_login_usage_errors(tmp_path: Path) -> None:
    async with Simulator(sim_config([A], relationships=1)) as sim:
        cfg = config(tmp_path, sim)
        rc, _, err = await run_cli("auth", "login", "--config", str(cfg), "--credential", "nope")
        assert rc == 2
        assert "unknown credential 'nope' (known: main)" in err
        rc, _, err = await run_cli("auth", "login", "--config", str(cfg), "--credential", "main",
                                   "--timeout", "soon")
        assert rc == 2
        assert "--timeout" in err
        rc, _, err = await run_cli("auth", "login", "--config", str(cfg), "--credential", "main",
                                   "--no-browser", "--port", "0", "--timeout", "1s")
        assert rc == 1
        assert "no sign-in within 1 s" in err
        assert "Traceback" not in err
