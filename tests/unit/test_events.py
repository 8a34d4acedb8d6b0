"""CloudEvent shape as promised in README.md (Events) and docs/schemas/."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.core import events as events_module
from notifier.core.diff import diff_page
from notifier.core.events import ChangeKind, build_event
from notifier.source.models import Relationship

RAW = {
    "id": "d98c1dd4-008f-04b2-e980-0998ecf8427e",
    "createdOn": "2015-10-21T16:32:22Z",
    "isReadOnly": True,
    "isService": False,
    "isDeleted": True,
    "deletedOn": "2016-01-01T00:00:00Z",
    "entities": [],
}
REL = Relationship(
    id=RAW["id"], created_on=RAW["createdOn"], is_deleted=True,  # type: ignore[arg-type]
    deleted_on=RAW["deletedOn"], raw=RAW,  # type: ignore[arg-type]
)


def test_created_event_structured_shape():
    ev = build_event(subscription="project-a", container_id="c1", relationship=REL,
                     kind=ChangeKind.CREATED, snapshot=True, seen_at="x")
    doc = orjson.loads(ev.structured_json())
    assert doc == {
        "specversion": "1.0",
        "id": ev.id,
        "type": "com.autodesk.bim360.relationship.created",
        "source": "/bim360/relationship/v2/containers/c1",
        "subject": RAW["id"],
        "time": "2015-10-21T16:32:22Z",
        "datacontenttype": "application/json",
        "snapshot": True,
        "data": {"subscription": "project-a", "containerId": "c1", "relationship": RAW},
    }


def test_deleted_event_time_prefers_deleted_on_then_seen_time():
    ev = build_event(subscription="s", container_id="c1", relationship=REL,
                     kind=ChangeKind.DELETED, snapshot=False, seen_at="2030-01-01T00:00:00Z")
    assert ev.type.endswith(".deleted")
    assert ev.time == "2016-01-01T00:00:00Z"
    bare = Relationship(id="x", created_on="", is_deleted=True, deleted_on=None, raw={"id": "x"})
    ev2 = build_event(subscription="s", container_id="c1", relationship=bare,
                      kind=ChangeKind.DELETED, snapshot=False, seen_at="2030-01-01T00:00:00Z")
    assert ev2.time == "2030-01-01T00:00:00Z"
    assert orjson.loads(ev2.data_json()) == ev2.data


def test_project_name_only_for_hub_streams() -> None:
    from notifier.core.events import ChangeKind, build_event
    from notifier.source.models import Relationship

    rel = Relationship(id="r1", created_on="2024-01-01T00:00:00Z", is_deleted=False,
                       deleted_on=None, raw={"id": "r1"})
    plain = build_event(subscription="s", container_id="c", relationship=rel,
                        kind=ChangeKind.CREATED, snapshot=False, seen_at="x")
    named = build_event(subscription="s", container_id="c", relationship=rel,
                        kind=ChangeKind.CREATED, snapshot=False, seen_at="x",
                        project_name="Tower A")
    assert "projectName" not in plain.data
    assert named.data == {"subscription": "s", "containerId": "c", "projectName": "Tower A",
                          "relationship": {"id": "r1"}}
    assert named.id == plain.id


@settings(max_examples=200, deadline=None)
@given(subscription=st.text(), container=st.text(), project=st.none() | st.text(),
       kept=st.booleans())
def test_data_json_is_the_dump_of_data_for_any_names(subscription, container, project, kept):
    """The head of ``data`` is cut from a dump, once per page: the bytes stay those of
    ``orjson.dumps(data)`` whatever the names hold (quotes, escapes, non-ASCII), for a
    relationship kept as text or built from a dict."""
    rel = Relationship(id=RAW["id"], created_on=RAW["createdOn"], is_deleted=True,  # type: ignore[arg-type]
                       deleted_on=RAW["deletedOn"],  # type: ignore[arg-type]
                       **({"json": orjson.dumps(RAW)} if kept else {"raw": dict(RAW)}))
    head = events_module.data_head(subscription, container, project)
    for handed in (None, head):  # computed by the event, or handed to it
        ev = build_event(subscription=subscription, container_id=container, relationship=rel,
                         kind=ChangeKind.DELETED, snapshot=False, seen_at="now",
                         project_name=project, head=handed)
        assert ev.data_json() == orjson.dumps(ev.data)
        assert orjson.loads(ev.data_json())["subscription"] == subscription


def test_a_page_s_events_share_one_data_head_and_keep_no_module_cache():
    """The diff builds a stream's ``data_head`` once per page and hands it to every event it
    builds (no cache outside the events); an event built without one computes the same."""
    rels = [Relationship(id=f"r{i}", created_on="2024-01-01T00:00:00Z", is_deleted=False,
                         deleted_on=None, json=b'{"id":"r%d"}' % i) for i in range(3)]
    page = diff_page(subscription="s", container_id="c", project_name="P", current=rels,
                     deleted=[], known=set(), resync=True, emit=True, seen_at="now")
    heads = {id(e.data_head) for e in page.events}
    assert len(heads) == 1
    assert page.events[0].data_head is not None
    alone = build_event(subscription="s", container_id="c", relationship=rels[0],
                        kind=ChangeKind.CREATED, snapshot=True, seen_at="now",
                        project_name="P")
    assert alone.data_json() == page.events[0].data_json() == orjson.dumps(alone.data)
    assert not [n for n in vars(events_module) if n.upper() == n and "HEAD" in n]
