"""Helpers for the hub discovery tests: a hub subscription config, events per container."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from notifier.simulator import Knobs, Simulator, SimulatorConfig
from tests.integration.main_job_support import base_config, read_jsonl

HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
SUB = "all-projects"


def hub_simulator() -> Simulator:
    return Simulator(SimulatorConfig(containers=[], seed=5, knobs=Knobs(rpm=0)))


def hub_config(tmp_path: Path, sim: Simulator, **sub: Any) -> dict[str, Any]:
    subscription = {"name": SUB, "credential": "sim", "hub_id": HUB, "discover_every": "1s",
                    "sinks": ["archive"], **sub}
    return base_config(tmp_path, sim.url, [subscription])


def events_of(tmp_path: Path) -> list[Mapping[str, Any]]:
    return read_jsonl(tmp_path / "events.jsonl").events


def for_project(events: list[Mapping[str, Any]], project_id: str) -> list[Mapping[str, Any]]:
    return [e for e in events if e["data"]["containerId"] == project_id[2:]]
