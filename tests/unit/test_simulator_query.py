"""Search/intersect criteria and PUT/delete rules of the simulator (no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.simulator import SimState, SimulatorConfig, writes
from notifier.simulator.bodies import ApiError
from notifier.simulator.model import Rel, make_entity
from notifier.simulator.query import Query, intersect_query, search_query

ASSET = ("autodesk-bim360-asset", "asset", "a1")
ISSUE = ("autodesk-bim360-issue", "issue", "i1")
PHOTO = ("autodesk-construction-photo", "photo", "p1")
C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def rel(a: tuple[str, str, str], b: tuple[str, str, str], created: float = 100.0) -> Rel:
    return Rel(1, 1, created, 0, make_entity(*a), make_entity(*b))


@pytest.mark.parametrize(("params", "hit"), [
    ({"domain": "autodesk-bim360-issue"}, True),            # either end
    ({"domain": "autodesk-bim360-asset", "type": "asset", "id": "a1"}, True),
    ({"domain": "autodesk-bim360-asset", "type": "asset", "id": "a2"}, False),
    ({"domain": "autodesk-bim360-asset", "withDomain": "autodesk-bim360-issue"}, True),
    ({"domain": "autodesk-bim360-issue", "withDomain": "autodesk-bim360-asset",
      "withType": "asset", "withId": "a1"}, True),
    ({"domain": "autodesk-bim360-asset", "withDomain": "autodesk-construction-photo"}, False),
    ({"createdAfter": "1970-01-01T00:01:00Z"}, True),        # 100 s > 60 s
    ({"createdBefore": "1970-01-01T00:01:00+00:00"}, False),
])
def test_search_matches_either_end(params: dict[str, str], hit: bool):
    assert search_query(params).matches(rel(ASSET, ISSUE)) is hit


@pytest.mark.parametrize(("params", "field"), [
    ({"type": "asset"}, "type"),
    ({"domain": "d", "id": "x"}, "id"),
    ({"withId": "x", "withDomain": "d"}, "withId"),
    ({"includeDeleted": "yes"}, "includeDeleted"),
    ({"createdAfter": "yesterday"}, "createdAfter"),
])
def test_search_rejects_bad_parameters(params: dict[str, str], field: str):
    with pytest.raises(ApiError) as err:
        search_query(params)
    assert err.value.status == 400
    assert err.value.body["errors"][0]["field"] == field


def test_intersect_body_rules():
    body = {"entities": [{"domain": ASSET[0], "type": "asset", "id": "a1"}],
            "withEntities": [{"domain": ISSUE[0]}]}
    q = intersect_query(body, {})
    assert q.matches(rel(ISSUE, ASSET))
    assert not q.matches(rel(ASSET, PHOTO))
    assert intersect_query([body], {}).key == q.key  # tutorial's array-wrapped form
    for bad in ({"entities": []}, {"entities": [{"domain": "d", "type": "t"}]},
                {**body, "withEntities": [{"type": "t"}]}, {"entities": [{}] * 21}):
        with pytest.raises(ApiError):
            intersect_query(bad, {})


def test_domain_filter_matches_either_end():
    q = Query.for_domains(["autodesk-construction-photo"])
    assert q.matches(rel(ASSET, PHOTO))
    assert not q.matches(rel(ASSET, ISSUE))


def entity(t: tuple[str, str, str]) -> dict[str, str]:
    return {"domain": t[0], "type": t[1], "id": t[2]}


def test_put_conflicts_and_idempotent_pairs():
    st = SimState(SimulatorConfig(containers=[C], relationships=0, seed=1))
    c = st.container(C)
    status, made = writes.create(st, c, [{"entities": [entity(ASSET), entity(ISSUE)]}])
    assert status == 200
    again: Any = writes.create(st, c, [{"entities": [entity(ISSUE), entity(ASSET)]}])
    assert again == (200, made)  # same live pair: the existing relationship
    status, body = writes.create(st, c, [
        {"id": made[0]["id"], "entities": [entity(ASSET), entity(PHOTO)]},
        {"entities": [entity(PHOTO), entity(ISSUE)]}])
    assert status == 409
    assert [x["id"] for x in body["conflict"]] == [made[0]["id"]]
    assert len(body["success"]) == 1
    with pytest.raises(ApiError) as err:  # photo <-> rfi is not writable
        writes.create(st, c, [{"entities": [entity(PHOTO),
                                             entity(("autodesk-bim360-rfi", "rfi", "r"))]}])
    assert err.value.status == 400


def test_delete_is_soft_idempotent_and_respects_read_only():
    st = SimState(SimulatorConfig(containers=[C], relationships=0, seed=1))
    c = st.container(C)
    (rid,) = st.create_relationships(C, [(ASSET, ISSUE)])
    (locked,) = st.create_relationships(C, [(ASSET, PHOTO)], service=True)
    unknown = "00000000-0000-4000-8000-000000000000"
    assert writes.delete(st, c, [rid, unknown]) == [rid]
    assert writes.delete(st, c, [rid]) == [rid]
    assert c.seq == 3  # the repeat did not log a second deletion
    with pytest.raises(ApiError) as err:
        writes.delete(st, c, [locked])
    assert err.value.status == 403
    with pytest.raises(ApiError):
        writes.delete(st, c, [])
