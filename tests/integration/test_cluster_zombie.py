"""A fenced zombie commits nothing.

Replica A owns every work partition. The simulator freezes A (SIGSTOP) the moment it answers
A's sync request for a page of new changes, so A is stopped with that page in hand. Replica B
joins the group, A's session expires, B takes every partition over (its transactional
producers fence A's), restores the state and delivers the same changes. Then A is resumed
(SIGCONT): it turns its page into events and tries to commit them, and Kafka refuses (A's log
and ``notifier_cluster_fenced_total`` say so). A read_committed consumer sees each change once,
none from A's stale page a second time, and no spent refresh token is ever presented (the
simulator runs with single-use refresh tokens, no grace).
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator, syncing
from tests.integration.fault_support import (
    assert_no_secrets,
    assert_no_traceback,
    caught_up,
    issued_secrets,
    secret_sim_config,
    seqs,
)
from tests.integration.main_job_support import base_config, wait_for
from tests.integration.replica_support import (
    ClusterSettings,
    CommittedReader,
    Replicas,
    assert_exactly_once,
    create_topic,
    sim_credentials,
    spread_names,
)

pytestmark = pytest.mark.kafka

CONTAINERS = [str(uuid.UUID(int=0x20B1E000 + i)) for i in range(4)]
TOPIC = "bim360.relationships"
CREDENTIALS = spread_names(len(CONTAINERS), 4)  # one per work partition
FENCED_LOG = "fenced by a newer owner"


@pytest.mark.timeout(300)
async def test_a_fenced_zombie_commits_nothing(tmp_path: Path, kafka_bootstrap: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = kafka_bootstrap
    run = uuid.uuid4().hex[:8]
    topic = f"{TOPIC}.{run}"
    settings = ClusterSettings(bootstrap=bootstrap, group=f"zombie-{run}",
                               state_topic=f"zombie-{run}.state", work_partitions=4)
    await create_topic(bootstrap, topic, 3)
    subs: list[dict[str, Any]] = [
        {"name": f"project-{i}", "credential": CREDENTIALS[i], "container_id": cid,
         "sinks": ["events"]} for i, cid in enumerate(CONTAINERS)]
    config = secret_sim_config(CONTAINERS, relationships=20, page_size=10, static_token=False,
                               access_token_lifetime=4.0, rotation_grace=False)
    async with Simulator(config) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[{
            "name": "events", "type": "kafka", "bootstrap_servers": bootstrap, "topic": topic,
            "request_timeout": "5s"}])
        data["credentials"] = sim_credentials(sim, CREDENTIALS)
        # A's page must survive the freeze: a request timeout measured across it would discard
        # the page (the loop's clock jumps), and A would have nothing left to commit.
        data["source"]["timeout"] = "120s"
        replicas = Replicas.create(tmp_path, settings, data, 2)
        a, b = replicas.members
        held: dict[str, Any] = {}
        real_sync = syncing.sync

        def freeze_a_with_a_page(state: Any, c: Any, user: str, body: Any,
                                 page_size: int | None = None) -> dict[str, Any]:
            page = real_sync(state, c, user, body, page_size)
            changes = page["current"]["data"] + page["deleted"]["data"]
            if held.get("armed") and isinstance(body, dict) and body.get("syncToken") and changes:
                os.kill(a.pid, signal.SIGSTOP)  # before A can read the answer
                a.paused = True
                held.update(armed=False, container=c.id, changes=len(changes))
            return page

        monkeypatch.setattr(syncing, "sync", freeze_a_with_a_page)
        start = seqs(sim)
        async with CommittedReader(bootstrap, topic) as reader:
            try:
                await a.start()
                await replicas.wait_all_owned(90, "A owning every partition")
                await wait_for(lambda: caught_up(sim, subs, reader.events()), 60,
                               "the bootstrap, read committed", interval=0.5)
                caught = seqs(sim)

                held["armed"] = True
                sim.state.create_relationships(CONTAINERS[1], 3)
                await wait_for(lambda: a.paused, 30, "A frozen with a page of changes")
                delivered_before = len(reader.records)
                await b.start()
                await wait_for(lambda: _owns_all(b, settings), 90, "B owning every partition")
                await wait_for(lambda: caught_up(sim, subs, reader.events()), 60,
                               "B delivering the changes A holds", interval=0.5)
                assert len(reader.records) > delivered_before

                a.resume()  # the zombie wakes up with its stale page
                await wait_for(lambda: FENCED_LOG in a.output(), 60, "A fenced")
                fenced = (await a.metrics()).get("notifier_cluster_fenced_total", 0.0)
                assert fenced >= 1
                await replicas.wait_all_owned(90, "A rejoined, partitions shared again")
                for cid in CONTAINERS:
                    sim.state.create_relationships(cid, 2)
                await wait_for(lambda: caught_up(sim, subs, reader.events()), 60,
                               "both replicas delivering after the fencing", interval=0.5)
                await replicas.stop_all()
                await wait_for(reader.caught_up, 30, "the reader at the end of the topic")
                events = reader.events()
            except BaseException:
                await replicas.kill_all()
                print(replicas.output()[-20000:])
                raise

        assert_exactly_once(sim, subs, events, since_start=start, since_caught=caught)
        assert sim.state.auth.counters.invalid_grants == 0, "a spent refresh token was used"
        assert FENCED_LOG not in b.output()
        assert_no_traceback(b.output())
        assert_no_secrets(replicas.output(), issued_secrets(sim))
        unexplained = [e for e in log_entries(a.output()) if "Traceback" in e
                       and not e.startswith(UNRETRIEVED_FENCE)]
        assert not unexplained, unexplained[0][:3000]
        if any(e.startswith(UNRETRIEVED_FENCE) for e in log_entries(a.output())):
            pytest.xfail("known defect: the fenced replica's aiokafka producer leaves its "
                         "ProducerFenced in futures nobody retrieves; asyncio logs them with a "
                         "traceback when they are collected")


# asyncio's report of a future whose ProducerFenced nobody retrieved (see the xfail above).
UNRETRIEVED_FENCE = "ERROR   asyncio: Future exception was never retrieved\nfuture: <Future " \
    "finished exception=ProducerFenced("


def log_entries(text: str) -> list[str]:
    """The log's entries (an entry starts with its timestamp), without the timestamps."""
    return [e[24:] for e in re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:)", text) if e.strip()]


async def _owns_all(replica: Any, settings: ClusterSettings) -> bool:
    return int(await replica.owned()) == settings.work_partitions
