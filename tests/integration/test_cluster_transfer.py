"""Moving a single process's state to cluster mode: ``notifier state export`` from the SQLite
file, ``notifier state import`` into the state topic; the replica that starts then restores it
and carries on from the stored tokens (no second bootstrap), and ``notifier status`` reads the
state topic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from notifier.simulator import Simulator
from tests.integration.cluster_support import CONTAINERS, Cluster
from tests.integration.fault_support import (
    assert_delivery,
    assert_no_traceback,
    busy_for,
    caught_up,
    secret_sim_config,
    seqs,
    stop_changes,
)
from tests.integration.main_job_support import (
    duplicates,
    run_cli,
    status_json,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.kafka


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_single_process_state_moves_into_the_state_topic(tmp_path: Path,
                                                               kafka_bootstrap: str) -> None:
    cluster = Cluster(kafka_bootstrap, partitions=3)
    subs = cluster.subscriptions()
    async with Simulator(secret_sim_config(list(CONTAINERS), relationships=20)) as sim:
        replica = cluster.replica(sim, tmp_path / "replica")
        clustered = replica.config
        single = yaml.safe_load(clustered.read_text())
        del single["cluster"]
        single["state"]["path"] = str(tmp_path / "single" / "state.db")
        single_cfg = write_config(tmp_path, single, "single.yaml")
        start = seqs(sim)

        rc, _, err = await run_cli("run", "--config", str(single_cfg), "--once", within=60)
        assert rc == 0, err
        exported = tmp_path / "exported.db"
        rc, out, err = await run_cli("state", "--config", str(single_cfg), "export",
                                     "--out", str(exported))
        assert rc == 0, err
        rc, _, err = await run_cli("state", "--config", str(single_cfg), "export",
                                   "--out", str(exported))
        assert rc == 2, "export never overwrites a file"
        assert "exists" in err
        rc, out, err = await run_cli("state", "--config", str(clustered), "import",
                                     "--in", str(exported), within=60)
        assert rc == 0, err
        assert "imported" in out
        rc, _, err = await run_cli("state", "--config", str(clustered), "import",
                                   "--in", str(exported), within=60)
        assert rc == 1, "a second import into a topic that holds state is refused"
        assert "already holds state" in err

        status = await status_json(clustered)
        assert {k for k, r in status.items() if r["bootstrapped"]} == \
            {(s["name"], s["container_id"]) for s in subs}, "status reads the state topic"

        async def on_topic() -> bool:
            return caught_up(sim, subs, await cluster.events())

        assert await on_topic(), "the single process's bootstrap is on the topic"
        async with replica:
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=10.0)
            await busy_for(sim, 10, 1.0)
            await stop_changes(sim)
            await wait_for(on_topic, 60, "the replica catching up", interval=0.5)
            assert await replica.stop() == 0

    events = await cluster.events()
    assert_delivery(sim, subs, events, since_start=start, since_caught=caught, what="moved")
    assert duplicates(events) == 0, "the replica went on from the imported tokens"
    assert_no_traceback(replica.output())
