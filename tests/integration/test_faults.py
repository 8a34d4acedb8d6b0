"""Fault scenarios: ``notifier run`` as a real process against the simulator, a real webhook
receiver and real files, under SIGKILL loops, 5xx bursts, 429 storms, access-token expiry with
refresh-token rotation, overwrite resyncs, webhook outages and malformed pages.

Every scenario ends with the same checks (``fault_support.assert_delivery``): nothing lost,
nothing invented, duplicates only with the same id, the replayed stream equals the simulator's
live set; quarantines only where README "Guarantees" says so; and no secret in the notifier's
output. The Kafka broker restart is in ``test_faults_kafka.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.fault_support import (
    ASSET,
    NotifierProcess,
    assert_delivery,
    assert_no_secrets,
    assert_no_traceback,
    assert_webhook_calls,
    busy_for,
    caught_up,
    events_by_subscription,
    issued_secrets,
    quarantine_lines,
    secret_sim_config,
    seqs,
    stop_changes,
    stored_refresh_tokens,
    webhook_secret,
    webhook_sink,
    with_sink,
)
from tests.integration.main_job_support import (
    base_config,
    duplicates,
    read_jsonl,
    wait_for,
    write_config,
)
from tests.integration.webhook_receiver import WebhookReceiver

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
SEED = int(os.environ.get("FAULT_SEED", "20240611"))


def config_for(tmp_path: Path, sim: Simulator, subs: list[dict[str, Any]],
               sinks: list[dict[str, Any]] | None = None, **poll: Any) -> Path:
    """Static-token credential (the simulator's random one), jsonl ``archive`` plus ``sinks``."""
    archive = {"name": "archive", "type": "jsonl", "path": str(tmp_path / "events.jsonl")}
    data = base_config(tmp_path, sim.url, subs, sinks=[archive, *(sinks or [])], poll=poll)
    data["credentials"][0]["access_token"] = sim.config.access_token
    return write_config(tmp_path, data)


def jsonl_events(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "events.jsonl").events


def check_output(notifier: NotifierProcess, sim: Simulator, *extra_secrets: str) -> str:
    text = notifier.output()
    assert_no_traceback(text)
    assert_no_secrets(text, issued_secrets(sim, *extra_secrets))
    return text


# --- 1. SIGKILL loop with 5xx bursts and 429 storms -------------------------------------------


@pytest.mark.timeout(120)
async def test_sigkill_loop_under_5xx_bursts_and_429_storms(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    secret = webhook_secret()
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive", "hooks"]},
        {"name": "all-ab", "credential": "sim", "container_ids": [A, B],
         "sinks": ["archive", "hooks"]},
        {"name": "assets-b", "credential": "sim", "container_id": B, "domains": [ASSET],
         "sinks": ["archive"]},
    ]
    hook_subs = with_sink(subs, "hooks")
    async with (
        WebhookReceiver(secret) as receiver,
        Simulator(secret_sim_config([A, B], relationships=40, page_size=5, latency=0.005)) as sim,
    ):
        cfg = config_for(tmp_path, sim, subs, [webhook_sink("hooks", receiver.url, secret)])
        start = seqs(sim)
        async with NotifierProcess(cfg, tmp_path) as notifier:
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 20,
                           "the bootstrap")
            caught = seqs(sim)
            # Retry-After of 1-2 s: a storm that pauses the credential without stalling the test.
            sim.state.limiter.window = 2.0
            sim.state.set_knobs(change_rate=15.0)
            phases: list[dict[str, Any]] = [
                {"fail_rate": 0.3}, {"fail_rate": 0.3},  # 5xx burst
                {"fail_rate": 0.0, "rpm": 4}, {"rpm": 4},  # 429 storm
                {"fail_rate": 0.3, "rpm": 4},  # both
                {"fail_rate": 0.0, "rpm": 0},  # calm again
            ]
            for knobs in phases:
                sim.state.set_knobs(**knobs)
                await busy_for(sim, 6, rng.uniform(0.2, 1.0))
                await notifier.restart()
            await stop_changes(sim)
            assert sim.state.stats.faults_injected > 0
            assert sim.state.stats.rate_limited > 0

            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 30,
                           f"catching up (seed {SEED})")
            want_hooks = events_by_subscription(
                e for e in jsonl_events(tmp_path) if e["data"]["subscription"] in
                {s["name"] for s in hook_subs})
            await receiver.wait_for(lambda: events_by_subscription(receiver.events) == want_hooks,
                                    within=30)
            assert await notifier.stop() == 0

        events = jsonl_events(tmp_path)
        assert_delivery(sim, subs, events, since_start=start, since_caught=caught,
                        what=f"jsonl (seed {SEED})")
        assert_delivery(sim, hook_subs, receiver.events, since_start=start, since_caught=caught,
                        what=f"webhook (seed {SEED})")
        redelivered = assert_webhook_calls(receiver)
        text = check_output(notifier, sim, secret)
        assert quarantine_lines(text) == [], "5xx and 429 are retried, never quarantined"
        assert notifier.kills == len(phases)
        print(f"seed {SEED}: {notifier.kills} kills, {len(events)} jsonl events "
              f"({duplicates(events)} repeated), {len(receiver.calls)} webhook calls "
              f"({redelivered} redelivered), {sim.state.stats.faults_injected} 5xx, "
              f"{sim.state.stats.rate_limited} 429")


# --- 2. access-token expiry and refresh-token rotation across SIGKILLs -------------------------


@pytest.mark.timeout(120)
async def test_token_expiry_and_rotation_across_sigkills(tmp_path: Path) -> None:
    """Access tokens live 2 s (renewed about every second) and every refresh rotates the refresh
    token; SIGKILLs land anywhere, one forced expiry makes requests fail with 401. The notifier
    keeps delivering and the token it has stored is never a spent one."""
    rng = random.Random(SEED + 2)
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "assets-ab", "credential": "sim", "container_ids": [A, B], "domains": [ASSET],
         "sinks": ["archive"]},
    ]
    async with Simulator(secret_sim_config([A, B], relationships=30, page_size=5,
                                           static_token=False,
                                           access_token_lifetime=2.0)) as sim:
        data = base_config(tmp_path, sim.url, subs)
        data["credentials"] = [{
            "name": "sim", "client_id": sim.config.client_id,
            "client_secret": sim.config.client_secret,
            "refresh_token": sim.config.refresh_token, "requests_per_minute": 6000}]
        cfg = write_config(tmp_path, data)
        db = tmp_path / "state.db"
        auth = sim.state.auth
        states: list[str] = []  # the state of the stored refresh token at every sample

        def sample() -> None:
            stored = stored_refresh_tokens(db)
            assert len(stored) <= 1, "one credential, one stored refresh token"
            states.append(auth.refresh_token_state(stored[0] if stored
                                                   else sim.config.refresh_token))

        async def sampler() -> None:
            while True:
                sample()
                await asyncio.sleep(0.05)

        start = seqs(sim)
        watch = asyncio.create_task(sampler())
        try:
            async with NotifierProcess(cfg, tmp_path) as notifier:
                await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 20,
                               "the bootstrap")
                caught = seqs(sim)
                sim.state.set_knobs(change_rate=10.0)
                for round_ in range(5):
                    await busy_for(sim, 6, rng.uniform(0.3, 2.5))
                    if round_ == 2:
                        # An access token revoked early: the next request gets a 401. (With 2 s
                        # tokens renewed every second, the checks, about a second apart, always
                        # start with a fresh token; a long-lived one makes the 401 certain.)
                        sim.state.set_knobs(access_token_lifetime=60.0)
                        issued = auth.counters.refreshes
                        await wait_for(lambda n=issued: auth.counters.refreshes > n, 10,
                                       "a refresh")
                        await busy_for(sim, 3, 0.1)
                        rejected = sim.state.stats.unauthorized
                        assert sim.state.expire_access_tokens() > 0
                        await wait_for(lambda n=rejected: sim.state.stats.unauthorized > n, 10,
                                       "a 401 for the revoked token")
                        sim.state.set_knobs(access_token_lifetime=2.0)
                        await busy_for(sim, 3, 0.1)
                    await notifier.kill()
                    sample()  # what a restart will find
                    await notifier.start()
                # The worst moment: the token endpoint has rotated the refresh token, and the
                # notifier dies before the answer (the new token) reaches it.
                original = auth.refresh

                def refresh_then_crash(client_id: str, token: str) -> dict[str, Any]:
                    auth.refresh = original  # type: ignore[method-assign]
                    grant = original(client_id, token)
                    notifier.crash_now()
                    return grant

                auth.refresh = refresh_then_crash  # type: ignore[method-assign]
                await notifier.reap_crash()
                sample()
                assert states[-1] == "rotated", "the stored token still works (its successor " \
                    "was issued but never used)"
                replays = auth.counters.replays
                await notifier.start()
                await busy_for(sim, 6, 1.5)  # lives through renewals
                assert auth.counters.replays > replays, "the restart recovered with the old token"
                await stop_changes(sim)
                await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 30,
                               "catching up")
                assert await notifier.stop() == 0
                sample()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

        spent = [s for s in states if s not in ("fresh", "rotated")]
        assert not spent, f"stored refresh token unusable in {len(spent)}/{len(states)} " \
            f"samples: {sorted(set(spent))}"
        assert auth.counters.invalid_grants == 0
        assert auth.counters.refreshes >= notifier.starts + 3, "tokens were renewed as they aged"
        assert_delivery(sim, subs, jsonl_events(tmp_path), since_start=start,
                        since_caught=caught, what="jsonl")
        text = check_output(notifier, sim)
        assert quarantine_lines(text) == []
        assert "refresh token was rejected" not in text
        print(f"{notifier.kills} kills, {auth.counters.refreshes} refreshes, "
              f"{auth.counters.replays} replays, {len(states)} samples of the stored token")
