"""Fault scenarios: ``notifier run`` as a real process against the simulator, a real webhook
receiver and real files, under SIGKILL loops, 5xx bursts, 429 storms, access-token expiry with
refresh-token rotation, overwrite resyncs, webhook outages and malformed pages.

Every scenario ends with the same checks (``fault_support.assert_delivery``): nothing lost,
nothing invented, duplicates only with the same id, the replayed stream equals the simulator's
live set; quarantines only where README "Guarantees" says so; and no secret in the notifier's
output. The Kafka broker restart is in ``test_faults_kafka.py``.

The scenarios of a minute or more (SIGKILL loops, token rotation, overwrites, malformed pages)
are marked slow: ``make test-long`` runs them; the webhook outage, with its restart, stays in
``make test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from notifier.simulator.malformed import INVENTED_PREFIX
from notifier.simulator.query import Query
from tests.integration.fault_support import (
    ASSET,
    ISSUE,
    NotifierProcess,
    assert_delivery,
    assert_no_secrets,
    assert_no_traceback,
    assert_webhook_calls,
    busy_for,
    caught_up,
    events_by_subscription,
    issued_secrets,
    lag,
    live,
    quarantine_lines,
    secret_sim_config,
    seqs,
    stop_changes,
    stored_refresh_tokens,
    streams,
    truth,
    webhook_secret,
    webhook_sink,
    with_sink,
)
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    base_config,
    duplicates,
    read_jsonl,
    status_json,
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


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigkill_loop_under_5xx_bursts_and_429_storms(tmp_path: Path) -> None:
    """Changes flow while the service answers 30% of requests with a 500, then refuses most with
    429 (Retry-After 1-2 s), then both; the notifier is SIGKILLed at a random moment of its work
    in every phase and restarted at once. The jsonl file and the webhook receiver get every
    change; nothing is quarantined (both faults are transient)."""
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

            # 60 s: on a loaded machine the restarted process alone takes seconds to start,
            # then drains what the last phases left; the point is that it all arrives.
            try:
                await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 60,
                               f"catching up (seed {SEED})")
            except AssertionError as exc:
                tail = notifier.stderr.read_text(errors="replace")[-2000:]
                raise AssertionError(f"{exc}; behind: {lag(sim, subs, jsonl_events(tmp_path))}"
                                     f"; the notifier's last log lines: {tail}") from None
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


@pytest.mark.slow
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
                                           access_token_lifetime=2.0,
                                           # what this test checks: the notifier recovers
                                           # through the service's (opt-in) rotation grace
                                           rotation_grace=True)) as sim:
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


# --- 3. overwrite resyncs while changes keep coming ------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_overwrite_resyncs_during_changes_emit_only_real_diffs(tmp_path: Path) -> None:
    """The retention horizon moves four times while changes flow; each time, right before the
    move (with no request served in between), some known relationships are deleted, some are
    created, and some are created and deleted again. Each overwrite resync must report exactly
    the first two as snapshot events, never the third, and never re-announce what was known.

    The background changes go on meanwhile, and may delete one of the new relationships before
    the resync's snapshot is taken: then it is lost history like the third kind (the service no
    longer lists it), so a creation is required where it was alive at the watermark of the
    snapshot that finished the resync (the simulator records it)."""
    rng = random.Random(SEED + 3)
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "all-b", "credential": "sim", "container_id": B, "sinks": ["archive"]},
        {"name": "assets-ab", "credential": "sim", "container_ids": [A, B], "domains": [ASSET],
         "sinks": ["archive"]},
        {"name": "issues-on-assets", "credential": "sim", "container_id": A,
         "query": {"domain": ISSUE, "type": "issue", "withDomain": ASSET},
         "sinks": ["archive"]},
    ]
    plain = {A: "all-a", B: "all-b"}
    gone: dict[str, set[str]] = {A: set(), B: set()}
    new: dict[str, set[str]] = {A: set(), B: set()}
    moves: dict[str, list[tuple[int, set[str]]]] = {A: [], B: []}  # (horizon, created before)
    ephemeral: dict[str, set[str]] = {A: set(), B: set()}
    async with Simulator(secret_sim_config([A, B], relationships=50, page_size=5)) as sim:
        cfg = config_for(tmp_path, sim, subs)
        start = seqs(sim)
        async with NotifierProcess(cfg, tmp_path) as notifier:
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 20,
                           "the bootstrap")
            sim.state.set_knobs(change_rate=12.0)
            for _ in range(4):
                await busy_for(sim, 8, rng.uniform(0.3, 1.0))
                # Freeze the notifier and let the simulator finish what it is serving: from here
                # to the horizon move nothing awaits, so the notifier cannot see these changes
                # except through the overwrite resync.
                assert notifier.proc is not None
                os.kill(notifier.proc.pid, signal.SIGSTOP)
                await asyncio.sleep(0.3)
                delivered = live(jsonl_events(tmp_path))
                for cid, name in plain.items():
                    alive = truth(sim, subs).get((name, cid), set())
                    known = sorted(delivered.get((name, cid), set()) & alive)
                    gone[cid] |= set(sim.state.delete_relationships(cid, rng.sample(known, 3)))
                    made = set(sim.state.create_relationships(cid, 3))
                    new[cid] |= made
                    brief = sim.state.create_relationships(cid, 2)
                    assert sim.state.delete_relationships(cid, brief) == brief
                    ephemeral[cid] |= set(brief)
                    moves[cid].append((sim.state.move_retention_horizon(cid), made))
                os.kill(notifier.proc.pid, signal.SIGCONT)
            await stop_changes(sim)
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 30,
                           "catching up")
            assert await notifier.stop() == 0

        events = jsonl_events(tmp_path)
        # Intermediate history before a horizon move is legitimately lost (since_caught=None);
        # the brief relationships below are exactly that case.
        assert_delivery(sim, subs, events, since_start=start, since_caught=None, what="jsonl")
        assert duplicates(events) == 0, "an overwrite re-announced a known relationship"
        everything = Query.everything().key
        lost = 0
        for cid, name in plain.items():
            mine = [e for e in events if e["data"]["subscription"] == name]
            created = {e["subject"] for e in mine if e["type"] == CREATED and e["snapshot"]}
            deleted = {e["subject"] for e in mine if e["type"] == DELETED and e["snapshot"]}
            deleted_at = {c["id"]: c["seq"] for c in sim.state.ground_truth(cid)["changes"]
                          if c["kind"] == "deleted"}
            finished = [at for c, key, at in sim.state.stats.snapshots_finished
                        if c == cid and key == everything]  # only the plain stream's query
            must: set[str] = set()
            for horizon, made in moves[cid]:
                # The first snapshot finished after the move lists everything alive at its
                # watermark (an attempt cut by the next move may have listed some already).
                at = next((w for w in finished if w >= horizon), None)
                assert at is not None, f"{name}: no resync finished after the move to {horizon}"
                must |= {r for r in made if deleted_at.get(r, at + 1) > at}
            lost += len(new[cid] - must)
            assert must <= created, f"{name}: creations found by an overwrite not reported: " \
                f"{sorted(must - created)}"
            assert gone[cid] <= deleted, f"{name}: deletions found by an overwrite not reported"
        for e in events:
            assert e["subject"] not in ephemeral[e["data"]["containerId"]], \
                f"{e['data']['subscription']}: an event for a relationship the service never " \
                f"listed: {e['type']} {e['subject']}"
        text = check_output(notifier, sim)
        assert quarantine_lines(text) == []
        resyncs = text.count("overwrite: resyncing")
        assert resyncs >= len(streams(subs)), f"only {resyncs} overwrite resyncs"
        print(f"{len(events)} events, {resyncs} overwrite resyncs, "
              f"{sum(map(len, gone.values()))} deletions and {sum(map(len, new.values()))} "
              f"creations found by resyncs ({lost} deleted again before the resync's snapshot)")


# --- 5. webhook receiver outage plus random failures -------------------------------------------


@pytest.mark.timeout(120)
async def test_webhook_outage_and_failures_deliver_everything_with_stable_ids(tmp_path: Path
                                                                               ) -> None:
    """The receiver fails 10% of calls throughout, goes away for three seconds (the notifier is
    killed meanwhile, with undelivered events in its outbox) and comes back on the same port:
    every change arrives, and every retry of an event carries its webhook-id and body."""
    rng = random.Random(SEED + 5)
    secret = webhook_secret()
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive", "hooks"]},
        {"name": "assets-b", "credential": "sim", "container_id": B, "domains": [ASSET],
         "sinks": ["hooks"]},
    ]
    async with (
        WebhookReceiver(secret, fail_rate=0.1, seed=SEED) as receiver,
        Simulator(secret_sim_config([A, B], relationships=30, page_size=5)) as sim,
    ):
        receiver.mode = "fail_random"
        cfg = config_for(tmp_path, sim, subs, [webhook_sink("hooks", receiver.url, secret)])
        start = seqs(sim)
        async with NotifierProcess(cfg, tmp_path) as notifier:
            await receiver.wait_for(lambda: caught_up(sim, subs, receiver.events), within=30)
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=15.0)
            await busy_for(sim, 6, rng.uniform(0.5, 1.0))
            await receiver.down()
            calls_before = len(receiver.calls)
            await asyncio.sleep(1.5)
            await notifier.restart()  # the outbox holds what the receiver did not take
            await asyncio.sleep(1.5)
            assert len(receiver.calls) == calls_before, "nobody listening, nothing received"
            await receiver.up()
            await busy_for(sim, 6, rng.uniform(0.5, 1.0))
            await stop_changes(sim)
            await receiver.wait_for(lambda: caught_up(sim, subs, receiver.events), within=40)
            assert await notifier.stop() == 0

        assert_delivery(sim, subs, receiver.events, since_start=start, since_caught=caught,
                        what="webhook")
        assert_delivery(sim, with_sink(subs, "archive"), jsonl_events(tmp_path),
                        since_start=start, since_caught=caught, what="jsonl")
        redelivered = assert_webhook_calls(receiver)
        failed = {c.webhook_id for c in receiver.calls if c.status >= 300}
        accepted = {c.webhook_id for c in receiver.calls if 200 <= c.status < 300}
        assert failed, "the receiver failed some calls"
        assert failed <= accepted, "every failed event was delivered later, under its own id"
        text = check_output(notifier, sim, secret)
        assert quarantine_lines(text) == [], "a sink outage never quarantines a stream"
        print(f"{len(receiver.calls)} calls, {len(failed)} events failed at least once, "
              f"{redelivered} redeliveries, {len(receiver.events)} events accepted")


# --- 6. malformed upstream pages ------------------------------------------------------------

# What the quarantine log line says about each kind (on a page with relationships or without).
MALFORMED = {
    "truncated_json": "response is not valid JSON",
    "missing_field": "missing field 'nextSyncToken'",
    "wrong_type": "expected a boolean, got a string",
    "third_entity": "entities: expected exactly 2 items, got 3",
}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_malformed_pages_quarantine_only_their_streams_which_recover(tmp_path: Path
                                                                           ) -> None:
    """Container A's sync answers are spoiled, one kind at a time: A's streams are quarantined
    with a log line saying what is wrong, B and C keep flowing, nothing from the bad pages is
    reported; once the answers are sound again A's streams recover and catch up. A one-shot
    fault heals by itself; a huge page is no fault at all."""
    C = "c4d5e6f7-8091-4a2b-8c3d-4e5f60718293"
    subs: list[dict[str, Any]] = [
        {"name": "victim", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "victim-assets", "credential": "sim", "container_id": A, "domains": [ASSET],
         "sinks": ["archive"]},
        {"name": "bystander", "credential": "sim", "container_ids": [B, C],
         "sinks": ["archive"]},
    ]
    victims = {("victim", A), ("victim-assets", A)}
    async with Simulator(secret_sim_config([A, B, C], relationships=20, page_size=5)) as sim:
        cfg = config_for(tmp_path, sim, subs, quarantine_backoff_initial="1s",
                         quarantine_backoff_max="2s")
        start = seqs(sim)

        def delivered(sub: str) -> set[str]:
            return {e["subject"] for e in jsonl_events(tmp_path)
                    if e["data"]["subscription"] == sub}

        async with NotifierProcess(cfg, tmp_path) as notifier:
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 20,
                           "the bootstrap")
            caught = seqs(sim)
            for n, (kind, message) in enumerate(MALFORMED.items()):
                seen = len(quarantine_lines(notifier.output(), "malformed_page"))
                recovered = notifier.output().count("stream recovered from quarantine")
                sim.state.set_knobs(malformed=kind, malformed_container=A)
                # Changes for both of A's streams (one of them filters on assets).
                bad = [*sim.state.create_relationships(A, 3), *sim.state.create_relationships(
                    A, [((ASSET, "asset", f"as-{n}"), (ISSUE, "issue", f"iss-{n}"))])]
                sim.state.delete_random(A, 1)

                def flagged(seen: int = seen, message: str = message) -> bool:
                    lines = quarantine_lines(notifier.output(), "malformed_page")[seen:]
                    return {(ln.split("subscription=")[1].split()[0], A) for ln in lines
                            if message in ln and f"container={A}" in ln} == victims

                await wait_for(flagged, 15, f"both streams of A quarantined for {kind}")
                if n == 0:
                    status = await status_json(cfg)
                    for key in victims:
                        assert status[key]["quarantine_reason"] == "malformed_page"
                    assert status[("bystander", B)]["quarantine_reason"] is None
                # The others keep flowing while A's streams wait.
                fine = [*sim.state.create_relationships(B, 2),
                        *sim.state.create_relationships(C, 2)]
                await wait_for(lambda fine=fine: set(fine) <= delivered("bystander"), 10,
                               f"the bystander's changes during {kind}")
                assert not set(bad) & (delivered("victim") | delivered("victim-assets")), \
                    f"{kind}: events from a malformed page"
                # The fault stops: A's streams come back and catch up.
                sim.state.set_knobs(malformed=None, malformed_container=None)
                await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 15,
                               f"recovery after {kind}")
                await wait_for(lambda r=recovered: notifier.output().count(
                    "stream recovered from quarantine") >= r + 2, 10, "the recovery log lines")

            # One spoiled answer only: one stream is quarantined once and heals by itself.
            seen = len(quarantine_lines(notifier.output(), "malformed_page"))
            sim.state.set_knobs(malformed="third_entity", malformed_container=A,
                                malformed_count=1)
            sim.state.create_relationships(A, 3)
            await wait_for(lambda: sim.state.knobs.malformed_count == 0, 10, "the one-shot")
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 15,
                           "recovery from the one-shot fault")
            assert len(quarantine_lines(notifier.output(), "malformed_page")) == seen + 1

            # Bad pages now and then, in the middle of an overwrite resync of many pages: the
            # resync stops at a bad page and resumes after its last good one, and stays exact.
            seen = len(quarantine_lines(notifier.output(), "malformed_page"))
            sim.state.delete_random(A, 4)
            sim.state.create_relationships(A, 4)
            sim.state.move_retention_horizon(A)
            sim.state.set_knobs(malformed="wrong_type", malformed_container=A,
                                malformed_count=3, malformed_rate=0.5)
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 40,
                           "an overwrite resync through intermittent bad pages")
            sim.state.set_knobs(malformed=None, malformed_rate=1.0)
            assert seen < len(quarantine_lines(notifier.output(), "malformed_page")) <= seen + 3

            # A huge page (the sync page size is undocumented) is processed, not quarantined.
            seen = len(quarantine_lines(notifier.output()))
            injected = sim.state.stats.malformed_injected
            sim.state.set_knobs(malformed="huge_page", malformed_count=None)
            sim.state.create_relationships(A, 3000)
            sim.state.delete_random(A, 40)
            await wait_for(lambda: caught_up(sim, subs, jsonl_events(tmp_path)), 30,
                           "the huge page")
            assert sim.state.stats.malformed_injected > injected
            assert len(quarantine_lines(notifier.output())) == seen
            sim.state.set_knobs(malformed=None, malformed_container=None)
            assert await notifier.stop() == 0

        events = jsonl_events(tmp_path)
        assert_delivery(sim, subs, events, since_start=start, since_caught=caught, what="jsonl")
        assert not [e for e in events if e["subject"].startswith(INVENTED_PREFIX)]
        assert duplicates(events) == 0, "only whole good pages are published, each once"
        text = check_output(notifier, sim)
        assert not [ln for ln in quarantine_lines(text) if "bystander" in ln]
        print(f"{len(events)} events, {len(quarantine_lines(text))} quarantines, "
              f"{sim.state.stats.malformed_injected} spoiled or huge answers")
