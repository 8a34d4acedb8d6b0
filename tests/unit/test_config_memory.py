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


def test_the_quick_test_of_a_usual_subscription_stands_for_every_rule() -> None:
    """SubscriptionConfig._rules_hold skips its _enforce_* rules for the usual shape (100,000
    subscriptions are validated at start-up): wherever it says they hold, each finds nothing,
    and any subscription validates exactly as with every rule run."""
    import itertools

    import pytest
    from pydantic import ValidationError

    from notifier.config.base import _rules
    from notifier.config.models import SubscriptionConfig

    # A rule added here must be covered by _rules_hold (or make it say False for its case).
    assert [r.__name__ for r in _rules(SubscriptionConfig)] == [
        "_enforce_one_credential_form", "_enforce_one_container_form",
        "_enforce_hub_fields_need_hub", "_enforce_hub_has_one_credential",
        "_enforce_domains_or_query", "_enforce_no_repeats"]
    hub = "b.5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
    options: dict[str, list[object]] = {
        "credential": [None, "main"], "credentials": [None, ["main"], ["main", "main"]],
        "container_id": [None, C1], "container_ids": [None, [C1], [C1, C1]],
        "hub_id": [None, hub], "discover_every": [None, "1h"],
        "domains": [None, ["autodesk-bim360-issue"]],
        "query": [None, {"domain": "autodesk-bim360-issue"}],
        "sinks": [["out"], ["out", "out"], ["out", "other"]],
    }
    seen_quick = seen_full = 0

    def outcome(data: dict[str, object]) -> object:
        try:
            return SubscriptionConfig.model_validate(data).model_dump()
        except ValidationError as exc:
            return [(e["loc"], e["msg"]) for e in exc.errors()]

    for combo in itertools.product(*options.values()):
        data = {"name": "s", **{k: v for k, v in zip(options, combo, strict=True)
                                if v is not None}}
        quick = outcome(data)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SubscriptionConfig, "_rules_hold", lambda self: False)
            full = outcome(data)
        assert quick == full, data
        if isinstance(quick, dict):
            sub = SubscriptionConfig.model_validate(data)
            if sub._rules_hold():
                seen_quick += 1
                assert all(rule(sub) == [] for rule in _rules(SubscriptionConfig))
            else:
                seen_full += 1
    assert seen_quick
    assert seen_full


def test_names_found_valid_are_remembered_up_to_a_bound_and_bad_ones_never() -> None:
    import pytest

    from notifier.config import types
    from notifier.errors import ConfigError

    many = [{"name": f"many-{i}", "credential": "main", "container_id": C1, "sinks": ["out"]}
            for i in range(types._VALID_NAMES_MAX + 10)]
    cfg = _config(many)
    assert len(types._VALID_NAMES) <= types._VALID_NAMES_MAX
    assert [s.name for s in cfg.subscriptions] == [f"many-{i}" for i in range(len(many))]
    for bad in ("bad name", "", "x" * 129):
        with pytest.raises(ConfigError) as info:
            _config([{"name": bad, "credential": "main", "container_id": C1, "sinks": ["out"]}])
        assert any("must be 1-128 characters" in p for p in info.value.problems)
        assert bad not in types._VALID_NAMES
