"""The command line as a user runs it: check-config, run --once, status (real subprocesses)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    base_config,
    check_stream_invariants,
    filter_of,
    read_jsonl,
    replay,
    run_cli,
    sim_config,
    status_json,
    truth_live,
    write_config,
)

pytestmark = pytest.mark.timeout(120)  # CLI processes: slow to start on a loaded machine

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
GHOST = "9e9e9e9e-1111-4222-8333-444455556666"
ASSET = "autodesk-bim360-asset"

GOOD = """\
source:
  base_url: http://127.0.0.1:9
  allow_insecure_http: true
credentials:
  - name: main
    access_token: ${CLI_TEST_TOKEN:-tok}
subscriptions:
  - name: a
    credential: main
    container_id: 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10
    sinks: [out]
sinks:
  - {name: out, type: jsonl, path: ./var/out.jsonl}
"""

# (name, YAML, field paths (or phrases) every command must print)
BAD_CONFIGS: list[tuple[str, str, list[str]]] = [
    ("fields", """\
source:
  base_url: ftp://example.com
credentials:
  - name: main
    access_token: SECRET-SHOULD-NOT-LEAK
    requests_per_minit: 5
poll:
  interval: soon
subscriptions:
  - name: a
    credential: main
    container_id: b.5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10
    sinks: [out]
  - name: b
    credential: main
    container_ids: [not-a-guid]
    domains: []
    sinks: [out]
sinks:
  - {name: out, type: jsonl}
  - {name: k, type: carrier-pigeon}
""", ["source.base_url", "credentials[0].requests_per_minit", "requests_per_minute",
      "poll.interval", "subscriptions[0].container_id", "subscriptions[1].container_ids[0]",
      "subscriptions[1].domains", "sinks[0].path", "sinks[1].type"]),
    ("references", """\
credentials:
  - name: main
    access_token: tok
subscriptions:
  - name: a
    credential: nobody
    container_id: 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10
    sinks: [missing]
  - name: a
    credential: main
    container_id: 5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10
    sinks: [out]
sinks:
  - {name: out, type: stdout}
""", ["subscriptions[0].credential", "subscriptions[0].sinks[0]", "subscriptions[1].name"]),
    ("either-or", GOOD.replace("    sinks: [out]\n", "    container_ids: [5d0c2a3e-3b1f-4b8e-"
                               "9a51-0d3c1f6f7a10]\n    domains: [x]\n    query: {domain: y}\n"
                               "    sinks: [out]\n"),
     ["subscriptions[0].container_ids", "subscriptions[0].query"]),
    ("missing", "poll: {interval: 5s}\n", ["credentials", "subscriptions", "sinks"]),
    ("env", GOOD.replace("${CLI_TEST_TOKEN:-tok}", "${CLI_TEST_SURELY_UNSET}"),
     ["credentials[0].access_token", "CLI_TEST_SURELY_UNSET"]),
    ("yaml", "credentials: [\n", ["invalid YAML"]),
    ("duplicate-key", GOOD + "sinks: []\n", ["duplicate key 'sinks'"]),
]


RUN_TOO = {"fields", "references", "yaml"}


async def test_bad_configs_exit_2_with_every_field_path(tmp_path: Path) -> None:
    async def one(name: str, text: str, wanted: list[str]) -> None:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        # `run` shares the loading path; a few cases suffice there (each process costs ~0.5 s).
        commands = ("check-config", "run") if name in RUN_TOO else ("check-config",)
        for command in commands:
            rc, out, err = await run_cli(command, "--config", str(path))
            where = f"{command} {name}:\n{err}"
            assert rc == 2, where
            assert "Traceback" not in err + out, where
            for w in wanted:
                assert w in err, f"{w!r} missing from {where}"
            assert "SECRET-SHOULD-NOT-LEAK" not in err + out

    results = await asyncio.gather(*(one(*case) for case in BAD_CONFIGS),
                                   return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]


async def test_good_config_checks_ok(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    rc, out, err = await run_cli("check-config", "--config", str(path))
    assert rc == 0, err
    assert f"{path}: OK" in out
    assert "1 credential, 1 subscription -> 1 stream" in out
    assert err == ""
    rc, _, err = await run_cli("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert rc == 2
    assert "file not found" in err


async def test_run_once_drains_everything_then_status_reports(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "all-ab", "credential": "sim", "container_ids": [A, B], "sinks": ["archive"]},
        {"name": "assets-b", "credential": "sim", "container_id": B, "domains": [ASSET],
         "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A, B], relationships=35, page_size=8)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, subs))

        def truth() -> dict[tuple[str, str], set[str]]:
            return {("all-ab", A): truth_live(sim, A, filter_of({})),
                    ("all-ab", B): truth_live(sim, B, filter_of({})),
                    ("assets-b", B): truth_live(sim, B, filter_of(subs[1]))}

        # Before any run: status knows the streams but nothing about them.
        rows = await status_json(cfg)
        assert set(rows) == set(truth())
        assert all(not r["bootstrapped"] and r["last_checked_at"] is None for r in rows.values())

        t0 = time.time()
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        assert "Traceback" not in err
        events = read_jsonl(path).events
        assert replay(events) == truth()
        assert all(e["snapshot"] for e in events)

        rows = await status_json(cfg)
        for key, want in truth().items():
            r = rows[key]
            assert r["bootstrapped"]
            assert r["known_relationships"] == len(want)
            assert t0 <= r["last_checked_at"] <= time.time()
            assert r["token_updated_at"] is not None
            assert r["quarantine_reason"] is None
        rc, out, err = await run_cli("status", "--config", str(cfg))
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["SUBSCRIPTION", "CONTAINER", "LAST"]
        for (sub, cid), want in truth().items():
            [line] = [ln for ln in lines if ln.startswith(sub) and cid in ln]
            assert f" {len(want)} " in f" {line} "
            assert line.rstrip().endswith("ok")
            assert "s ago" in line

        # A second pass emits only what changed since, not a snapshot again.
        gone = sim.state.delete_random(B, 2)
        new = sim.state.create_relationships(A, 3)
        before = len(events)
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        events = read_jsonl(path).events
        later = events[before:]
        assert not any(e["snapshot"] for e in later)
        assert {(e["type"], e["subject"]) for e in later if e["data"]["subscription"] == "all-ab"} \
            == {(DELETED, r) for r in gone} | {(CREATED, r) for r in new}
        assert replay(events) == {k: v for k, v in truth().items()}
        check_stream_invariants(events)

        # A nothing-to-do pass writes nothing and still succeeds.
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 0, err
        assert len(read_jsonl(path).events) == len(events)


async def test_run_once_with_a_missing_container_drains_the_rest_and_fails(tmp_path: Path
                                                                           ) -> None:
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "fine", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "ghost", "credential": "sim", "container_id": GHOST, "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A], relationships=10)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, subs))
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 1, "a stream that could not be drained makes the pass fail"
        assert "Traceback" not in err
        assert "quarantined" in err
        assert replay(read_jsonl(path).events) == {("fine", A): truth_live(sim, A, filter_of({}))}
        rows = await status_json(cfg)
        assert rows[("ghost", GHOST)]["quarantine_reason"] == "gone"
        assert rows[("ghost", GHOST)]["quarantined_until"] > time.time()
        # A later pass still tries it (the user asked for every subscription) and still fails,
        # rather than skipping it quietly because of the backoff and reporting success.
        rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
        assert rc == 1, err
        assert (await status_json(cfg))[("ghost", GHOST)]["failures"] == 2
        rc, out, _ = await run_cli("status", "--config", str(cfg))
        assert rc == 0
        [line] = [ln for ln in out.splitlines() if ln.startswith("ghost")]
        assert "quarantined (gone)" in line


async def test_an_invalid_log_level_is_a_usage_error(tmp_path: Path) -> None:
    rc, out, err = await run_cli("run", "--config", str(tmp_path / "absent.yaml"),
                                 "--log-level", "loud")
    assert rc == 2
    assert out == ""
    assert "argument --log-level: invalid level 'loud' (choose from DEBUG, INFO" in err
    assert "Traceback" not in err
