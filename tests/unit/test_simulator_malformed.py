"""The simulator's malformed-page knob: which answers it spoils, and how a client sees them."""

from __future__ import annotations

import random

import orjson
import pytest

from notifier.errors import ProtocolError
from notifier.simulator import SimState, SimulatorConfig, malformed, syncing
from notifier.simulator.config import Knobs
from notifier.source.parse import parse_sync_page

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
OTHER = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
USER = "u1"


def state(relationships: int = 12, **knobs: object) -> SimState:
    return SimState(SimulatorConfig(containers=[C, OTHER], relationships=relationships, seed=3,
                                    knobs=Knobs(page_size=5, **knobs)))  # type: ignore[arg-type]


@pytest.mark.parametrize(("knobs", "problem"), [
    ({"malformed": "sideways"}, "malformed must be one of"),
    ({"malformed_rate": 1.5}, "malformed_rate"),
    ({"malformed_count": -1}, "malformed_count"),
])
def test_bad_knobs_are_refused(knobs: dict[str, object], problem: str) -> None:
    st = state()
    with pytest.raises(ValueError, match=problem):
        st.set_knobs(**knobs)


def test_choose_targets_a_container_and_counts_down() -> None:
    st = state(malformed="wrong_type", malformed_container=C.upper(), malformed_count=2)
    rng = random.Random(1)
    assert malformed.choose(st.knobs, OTHER, rng) is None
    assert st.knobs.malformed_count == 2  # an answer left alone does not count
    assert [malformed.choose(st.knobs, C, rng) for _ in range(4)] == [
        "wrong_type", "wrong_type", None, None]
    assert st.knobs.malformed_count == 0


def test_choose_off_and_rate() -> None:
    rng = random.Random(7)
    assert malformed.choose(Knobs(), C, rng) is None
    assert malformed.choose(Knobs(malformed="huge_page", malformed_rate=0.0), C, rng) is None
    hits = sum(malformed.choose(Knobs(malformed="missing_field", malformed_rate=0.5), C, rng)
               is not None for _ in range(400))
    assert 140 < hits < 260


@pytest.mark.parametrize(("kind", "relationships", "message"), [
    ("truncated_json", 12, "not valid JSON"),
    ("truncated_json", 0, "not valid JSON"),
    ("missing_field", 12, "missing field 'nextSyncToken'"),
    ("wrong_type", 12, "current.data[0].isDeleted: expected a boolean, got a string"),
    ("wrong_type", 0, "moreData: expected a boolean, got a string"),
    ("third_entity", 12, "current.data[0].entities: expected exactly 2 items, got 3"),
    ("third_entity", 0, "current.data[0].entities: expected exactly 2 items, got 3"),
])
def test_spoiled_pages_fail_validation(kind: str, relationships: int, message: str) -> None:
    st = state(relationships)
    page = syncing.sync(st, st.container(C), USER, {})
    body = malformed.spoil(page, kind, random.Random(0))
    with pytest.raises(ProtocolError) as info:
        parse_sync_page(body)
    assert message in str(info.value)


def test_invented_relationship_is_recognisable() -> None:
    st = state(0)
    page = syncing.sync(st, st.container(C), USER, {})
    malformed.spoil(page, "third_entity", random.Random(0))
    [rel] = page["current"]["data"]
    assert rel["id"].startswith(malformed.INVENTED_PREFIX)
    assert len(rel["entities"]) == 3


def test_huge_page_size_override_spans_every_item() -> None:
    st = state(300)
    c = st.container(C)
    normal = syncing.sync(st, c, USER, {})
    assert len(normal["current"]["data"]) == 5
    assert normal["moreData"]
    huge = syncing.sync(st, c, USER, {}, malformed.HUGE_PAGE_SIZE)
    assert len(huge["current"]["data"]) == 300
    assert not huge["moreData"]
    parsed = parse_sync_page(orjson.dumps(huge))
    assert len(parsed.current) == 300


def test_spoil_refuses_huge_page() -> None:
    with pytest.raises(ValueError, match="not a spoiling kind"):
        malformed.spoil({}, "huge_page", random.Random(0))
