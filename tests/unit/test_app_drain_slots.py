"""The process's drain slots (poll.sync_concurrency) are one set, also when schedulers are built
in several rounds (cluster mode builds them per assigned partition)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from notifier.app import App
from notifier.config.loader import config_from_data

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"


def test_schedulers_built_in_rounds_share_the_drain_slots(tmp_path: Path) -> None:
    config = config_from_data({
        "source": {"base_url": "http://127.0.0.1:1", "allow_insecure_http": True},
        "credentials": [{"name": "a", "access_token": "x"}, {"name": "b", "access_token": "y"}],
        "state": {"path": str(tmp_path / "s.db")},
        "poll": {"sync_concurrency": 2},
        "subscriptions": [
            {"name": "one", "credential": "a", "container_id": A, "sinks": ["out"]},
            {"name": "two", "credential": "b", "container_id": B, "sinks": ["out"]},
        ],
        "sinks": [{"name": "out", "type": "stdout"}],
    })
    app = App(config)
    sinks: dict[str, Any] = {"out": object()}
    build = app.assembly.build_schedulers
    first = build(cast(Any, {"a": object()}), sinks, cast(Any, object()), cast(Any, object()))
    second = build(cast(Any, {"b": object()}), sinks, cast(Any, object()), cast(Any, object()))
    assert [s.name for s in first] == ["a"]
    assert [s.name for s in second] == ["b"]
    assert first[0]._drain_slots is second[0]._drain_slots
    assert first[0]._drain_slots._value == 2
