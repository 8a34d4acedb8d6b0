"""The simulator's sync protocol as a client sees it, without HTTP (random interleavings)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from notifier.simulator import SimState, SimulatorConfig, syncing
from notifier.simulator.bodies import ApiError
from notifier.simulator.config import Knobs
from notifier.simulator.model import Container
from notifier.simulator.query import Query, search_query

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
USER = "u1"
PHOTO = "autodesk-construction-photo"


def make_state(seed: int, page_size: int, relationships: int = 0) -> SimState:
    knobs = Knobs(page_size=page_size)
    return SimState(SimulatorConfig(containers=[C], relationships=relationships, seed=seed,
                                    knobs=knobs))


def expected(st: SimState, domains: list[str] | None) -> set[str]:
    c = st.container(C)
    return {r.id for r in c.by_id.values()
            if not r.dseq and (domains is None or r.a[0] in domains or r.b[0] in domains)}


class Client:
    """Keeps a local copy the way the docs tell a client to."""

    def __init__(self, st: SimState, rng: random.Random) -> None:
        self.st, self.rng = st, rng
        self.local: set[str] = set()
        self.pages = 0

    def mutate(self, n: int) -> None:
        for _ in range(n):
            self.st.random_change()

    def drain(self, body: dict[str, Any], churn: float) -> str:
        c = self.st.container(C)
        resetting = False
        while True:
            page = syncing.sync(self.st, c, USER, body)
            self.pages += 1
            size = len(page["current"]["data"]) + len(page["deleted"]["data"])
            assert size <= self.st.knobs.page_size
            if page["overwrite"]:
                assert page["deleted"]["data"] == []
                if not resetting:
                    self.local.clear()
                    resetting = True
            self.local |= {r["id"] for r in page["current"]["data"]}
            self.local -= {r["id"] for r in page["deleted"]["data"]}
            if self.rng.random() < churn:
                self.mutate(self.rng.randint(1, 4))
            if not page["moreData"]:
                return str(page["nextSyncToken"])
            body = {"syncToken": page["nextSyncToken"]}

    def status(self, token: str) -> dict[str, Any]:
        out = syncing.sync_status(self.st, self.st.container(C), USER, [{"syncToken": token}])
        assert out["errors"] == []
        return dict(out["results"][0])


@pytest.mark.parametrize("domains", [None, [PHOTO], [PHOTO, "autodesk-bim360-rfi"]])
@pytest.mark.parametrize("seed", range(6))
def test_local_copy_converges_under_random_changes(seed: int, domains: list[str] | None):
    rng = random.Random(seed)
    st = make_state(seed, page_size=rng.choice([1, 3, 7]), relationships=rng.randint(0, 30))
    client = Client(st, rng)
    body: dict[str, Any] = {"filters": {"domains": domains}} if domains else {}
    token = client.drain(body, churn=0.5)
    for _ in range(25):
        client.mutate(rng.randint(0, 8))
        if rng.random() < 0.15:
            st.move_retention_horizon(C)
        token = client.drain({"syncToken": token}, churn=0.3)
        token = client.drain({"syncToken": token}, churn=0.0)  # quiet: must be exact now
        assert client.local == expected(st, domains)
        assert client.status(token) == {"syncToken": token, "referenceId": None,
                                        "moreData": False, "overwrite": False}


@pytest.mark.parametrize("seed", range(4))
def test_sync_status_more_data_iff_sync_returns_something(seed: int):
    rng = random.Random(seed)
    st = make_state(seed, page_size=5, relationships=12)
    client = Client(st, rng)
    c = st.container(C)
    tokens = [client.drain({}, 0.0), client.drain({"filters": {"domains": [PHOTO]}}, 0.0)]
    for params in ({"domain": PHOTO, "type": "photo"},
                   {"domain": "autodesk-bim360-issue", "onlyDeleted": "true"},
                   {"withDomain": "autodesk-bim360-documentmanagement"}):
        page = syncing.query_page(st, c, USER, search_query(params), 5, None)
        tokens += [page["page"]["syncToken"]] * 2  # two copies drift apart
    for _ in range(60):
        client.mutate(rng.randint(0, 2))
        if rng.random() < 0.2:
            c.status_memo.clear()  # as after an eviction: rebuilt from any watermark
        order = list(enumerate(tokens))
        rng.shuffle(order)
        for n, token in order:
            more = client.status(token)["moreData"]
            page = syncing.sync(st, st.container(C), USER, {"syncToken": token})
            got = page["current"]["data"] or page["deleted"]["data"]
            assert more == bool(got)
            if rng.random() < 0.5:
                tokens[n] = page["nextSyncToken"]


def test_search_scoped_token_follows_only_its_query():
    rng = random.Random(5)
    st = make_state(5, page_size=4, relationships=40)
    c: Container = st.container(C)
    q = search_query({"domain": PHOTO, "type": "photo"})
    first = syncing.query_page(st, c, USER, q, 4, None)
    seen = {r["id"] for r in first["relationships"]}
    cont = first["page"]["continuationToken"]
    while cont:
        page = syncing.query_page(st, c, USER, q, 4, cont)
        seen |= {r["id"] for r in page["relationships"]}
        cont = page["page"]["continuationToken"]
    assert seen == expected(st, [PHOTO])
    client = Client(st, rng)
    client.local = seen
    for _ in range(40):
        st.random_change()
    client.drain({"syncToken": first["page"]["syncToken"]}, churn=0.0)
    assert client.local == expected(st, [PHOTO])


def test_filters_with_a_token_are_ignored_and_counted():
    st = make_state(1, page_size=100, relationships=5)
    c = st.container(C)
    token = syncing.sync(st, c, USER, {})["nextSyncToken"]
    st.create_relationships(C, 2)
    page = syncing.sync(st, c, USER, {"syncToken": token, "filters": {"domains": ["nope"]}})
    assert len(page["current"]["data"]) == 2
    assert st.stats.sync_filters_ignored == 1


@pytest.mark.parametrize("body", [[], "x", {"syncToken": 5}, {"syncToken": "AAAA"},
                                  {"filters": {"domains": ["a"] * 21}}, {"filters": []}])
def test_bad_sync_bodies_are_400(body: Any):
    st = make_state(1, page_size=10)
    with pytest.raises(ApiError) as err:
        syncing.sync(st, st.container(C), USER, body)
    assert err.value.status == 400
    assert err.value.body["type"] == "BadInput"


def test_created_and_deleted_in_one_window_only_shows_as_deleted():
    st = make_state(1, page_size=10)
    c = st.container(C)
    token = syncing.sync(st, c, USER, {})["nextSyncToken"]
    (rid,) = st.create_relationships(C, 1)
    st.delete_relationships(C, [rid])
    page = syncing.sync(st, c, USER, {"syncToken": token})
    assert page["current"]["data"] == []
    assert [r["id"] for r in page["deleted"]["data"]] == [rid]
    assert page["deleted"]["data"][0]["isDeleted"] is True


def test_window_is_fixed_while_paging():
    st = make_state(1, page_size=2)
    c = st.container(C)
    token = syncing.sync(st, c, USER, {})["nextSyncToken"]
    made = st.create_relationships(C, 3)
    first = syncing.sync(st, c, USER, {"syncToken": token})
    assert [r["id"] for r in first["current"]["data"]] == made[:2]
    assert first["moreData"] is True
    st.delete_relationships(C, [made[2]])  # after the window (and its end) were fixed
    later = st.create_relationships(C, 1)
    second = syncing.sync(st, c, USER, {"syncToken": first["nextSyncToken"]})
    assert [r["id"] for r in second["current"]["data"]] == [made[2]]
    assert second["current"]["data"][0]["isDeleted"] is False
    assert second["moreData"] is False
    third = syncing.sync(st, c, USER, {"syncToken": second["nextSyncToken"]})
    assert [r["id"] for r in third["deleted"]["data"]] == [made[2]]
    assert [r["id"] for r in third["current"]["data"]] == later


def test_snapshot_is_as_of_its_watermark():
    st = make_state(1, page_size=2, relationships=4)
    c = st.container(C)
    live = sorted(expected(st, None))
    first = syncing.sync(st, c, USER, {})
    assert first["moreData"] is True
    rest_ids = [r.id for r in c.log[2:4]]
    st.delete_relationships(C, rest_ids[:1])
    st.create_relationships(C, 1)
    second = syncing.sync(st, c, USER, {"syncToken": first["nextSyncToken"]})
    snapshot = [r["id"] for p in (first, second) for r in p["current"]["data"]]
    assert sorted(snapshot) == live
    assert all(r["isDeleted"] is False for r in second["current"]["data"])


def test_time_based_retention_moves_horizon_one_period_behind():
    from notifier.simulator.generator import ChangeGenerator

    st = make_state(1, page_size=10, relationships=3)
    st.knobs.retention = 10.0
    gen = ChangeGenerator(st)
    c = st.container(C)
    gen._retain(0.0)  # first mark at seq 3
    st.create_relationships(C, 2)
    gen._retain(5.0)  # not a full period yet
    assert c.horizon == 0
    gen._retain(10.0)  # horizon -> seq of the previous mark
    assert c.horizon == 3
    st.create_relationships(C, 1)
    gen._retain(20.0)
    assert c.horizon == 5


def ids_of(page: dict[str, Any], part: str) -> list[str]:
    return [r["id"] for r in page[part]["data"]]


def test_a_horizon_move_mid_snapshot_restarts_it_from_the_start():
    st = make_state(1, page_size=2, relationships=5)
    c = st.container(C)
    first = syncing.sync(st, c, USER, {})
    listed = ids_of(first, "current")
    st.delete_relationships(C, listed[:1])
    st.move_retention_horizon(C)
    again = syncing.sync(st, c, USER, {"syncToken": first["nextSyncToken"]})
    # A fresh snapshot (overwrite), listing from the start again: the first page's survivor
    # comes again, the deleted one does not.
    assert again["overwrite"] is True
    assert ids_of(again, "current")[0] == listed[1]
    assert listed[0] not in ids_of(again, "current")


def test_finished_snapshots_are_recorded_with_their_watermark():
    st = make_state(1, page_size=2, relationships=3)
    c = st.container(C)
    first = syncing.sync(st, c, USER, {})
    st.create_relationships(C, 1)
    assert list(st.stats.snapshots_finished) == []  # not finished: nothing yet
    second = syncing.sync(st, c, USER, {"syncToken": first["nextSyncToken"]})
    assert second["moreData"] is False
    everything = Query.everything().key
    assert list(st.stats.snapshots_finished) == [(C, everything, 3)]  # as of its watermark
    st.move_retention_horizon(C)
    again = syncing.sync(st, c, USER, {"syncToken": second["nextSyncToken"]})
    while again["moreData"]:
        again = syncing.sync(st, c, USER, {"syncToken": again["nextSyncToken"]})
    assert list(st.stats.snapshots_finished) == [(C, everything, 3), (C, everything, 4)]
    assert st.stats.to_json()["snapshots_finished"] == 2


def test_snapshot_deletions_knob_lists_the_ranges_tombstones():
    st = make_state(1, page_size=3, relationships=6)
    c = st.container(C)
    order = [r.id for r in c.log[:6]]
    st.delete_relationships(C, [order[1], order[4]])
    plain = syncing.sync(st, c, USER, {})
    assert ids_of(plain, "deleted") == []
    st.knobs.snapshot_deletions = True
    seen: list[str] = []
    gone: list[str] = []
    body: dict[str, Any] = {}
    while True:
        page = syncing.sync(st, c, USER, body)
        assert len(page["current"]["data"]) + len(page["deleted"]["data"]) <= 3
        assert all(r["isDeleted"] is True for r in page["deleted"]["data"])
        seen += ids_of(page, "current")
        gone += ids_of(page, "deleted")
        if not page["moreData"]:
            break
        body = {"syncToken": page["nextSyncToken"]}
    assert seen == [order[i] for i in (0, 2, 3, 5)]
    assert gone == [order[1], order[4]]
    # A deletion after the watermark is not a tombstone: it comes incrementally.
    st.delete_relationships(C, [order[0]])
    after = syncing.sync(st, c, USER, {"syncToken": page["nextSyncToken"]})
    assert ids_of(after, "deleted") == [order[0]]


def test_reject_sync_tokens_knob_counts_down():
    st = make_state(1, page_size=10, relationships=2)
    c = st.container(C)
    token = syncing.sync(st, c, USER, {})["nextSyncToken"]
    st.knobs.reject_sync_tokens = 2
    syncing.sync(st, c, USER, {})  # no token: not affected
    for _ in range(2):
        with pytest.raises(ApiError) as err:
            syncing.sync(st, c, USER, {"syncToken": token})
        assert err.value.status == 400
    assert st.knobs.reject_sync_tokens == 0
    assert syncing.sync(st, c, USER, {"syncToken": token})["moreData"] is False


def test_status_batch_400_knob_rejects_the_whole_batch():
    st = make_state(1, page_size=10, relationships=2)
    c = st.container(C)
    good = syncing.sync(st, c, USER, {})["nextSyncToken"]
    batch = [{"syncToken": good, "referenceId": "0"}, {"syncToken": "garbage", "referenceId": "1"}]
    answer = syncing.sync_status(st, c, USER, batch)
    assert [r["referenceId"] for r in answer["results"]] == ["0"]
    assert [e["referenceId"] for e in answer["errors"]] == ["1"]
    st.knobs.status_batch_400 = True
    with pytest.raises(ApiError) as err:
        syncing.sync_status(st, c, USER, batch)
    assert err.value.status == 400
    assert syncing.sync_status(st, c, USER, batch[:1])["results"][0]["referenceId"] == "0"
