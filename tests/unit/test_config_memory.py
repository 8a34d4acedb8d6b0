"""Large configs stay small in memory: shared field sets and container-id strings."""

from __future__ import annotations

import sys

from notifier.config import config_from_data

C1 = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
C2 = "6e1d3b4f-4c2a-4c9f-8b62-1e4d2a7b8c21"


def _config(subs: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    return config_from_data({
        "credentials": [{"name": "main", "access_token": "t"}],
        "subscriptions": subs,
        "sinks": [{"name": "out", "type": "stdout"}],
    })


def test_equal_field_sets_are_one_shared_set_and_stay_correct() -> None:
    cfg = _config([
        {"name": "a", "credential": "main", "container_id": C1, "sinks": ["out"]},
        {"name": "b", "credential": "main", "container_id": C1.upper(), "sinks": ["out"]},
        {"name": "c", "credential": "main", "container_id": C2, "sinks": ["out"],
         "emit_initial": False},
    ])
    a, b, c = cfg.subscriptions
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set == {"name", "credential", "container_id", "sinks"}
    assert c.model_fields_set == {"name", "credential", "container_id", "sinks", "emit_initial"}
    assert a.model_dump(exclude_unset=True) == {
        "name": "a", "credential": "main", "container_id": C1, "sinks": ["out"]}
    # A copy with changes gets its own set; the shared one is untouched.
    d = a.model_copy(update={"emit_initial": False})
    d.model_fields_set.add("domains")
    assert a.model_fields_set == {"name", "credential", "container_id", "sinks"}
    assert a.container_id is b.container_id  # one string per container id


def test_names_are_interned_so_many_subscriptions_share_their_credential_and_sinks() -> None:
    subs = [{"name": f"s{i}", "credential": "main", "container_id": C1, "sinks": ["out"]}
            for i in range(3)]
    # Separate string objects in the input, as a parser gives them.
    for s in subs:
        s["credential"] = "".join(["ma", "in"])
        s["sinks"] = ["".join(["o", "ut"])]
    a, b, c = _config(subs).subscriptions
    assert a.credential == "main"
    assert a.sinks == ["out"]
    assert a.credential is b.credential is c.credential
    assert a.sinks[0] is b.sinks[0] is c.sinks[0]
    assert a.name is sys.intern("s0")  # the store's rows share it (state.sqlite_streams)
