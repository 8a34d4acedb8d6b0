"""The hub subscription contract: hub_id, projects include/exclude regexes, discover_every."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.config import config_from_data
from notifier.config.loader import summarize
from tests.unit.test_config import DELETE, GUID_A, patched, problems

HUB = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


def hub(**changes: Any) -> dict[str, Any]:
    """``minimal()`` with its subscription turned into a hub subscription, plus ``changes``."""
    return patched({"subscriptions.0.container_id": DELETE, "subscriptions.0.hub_id": HUB,
                    **{f"subscriptions.0.{k}": v for k, v in changes.items()}})


def test_hub_subscription_contract() -> None:
    config = config_from_data(hub(
        hub_id=HUB.upper().replace("B.", "b."),
        projects={"include": ["^Tower", "Hospital"], "exclude": ["(?i)archive"]},
        discover_every="5m", emit_initial=False), environ={})
    sub = config.subscriptions[0]
    assert sub.hub_id == HUB
    assert sub.projects is not None
    assert sub.projects.include == ["^Tower", "Hospital"]
    assert sub.projects.exclude == ["(?i)archive"]
    assert sub.discover_every == 300
    assert sub.emit_initial is False
    assert sub.containers == []
    assert list(config.streams()) == []
    assert config.hub_subscriptions == [sub]
    assert any("every project of hub " + HUB in line for line in summarize(config))


def test_hub_defaults() -> None:
    sub = config_from_data(hub(), environ={}).subscriptions[0]
    assert sub.discover_every == 900
    assert sub.projects is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (hub(hub_id=GUID_A),
         "subscriptions[0].hub_id: add the 'b.' prefix: a hub id is the account id as 'b.<GUID>'"),
        (hub(hub_id="a.YnVzaW5lc3M6YXV0b2Rlc2s3MzIx"),
         "subscriptions[0].hub_id: must be a BIM 360/ACC hub id such as "
         "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"),
        (hub(container_id=GUID_A),
         "subscriptions[0].container_id: give either hub_id or container ids, not both"),
        (hub(container_ids=[GUID_A]),
         "subscriptions[0].container_ids: give either hub_id or container ids, not both"),
        (hub(projects={"include": ["(Tower"]}),
         "subscriptions[0].projects.include[0]: not a valid regular expression: "
         "missing ), unterminated subpattern at position 0"),
        (hub(projects={"exclude": ["ok", "*bad"]}),
         "subscriptions[0].projects.exclude[1]: not a valid regular expression: "
         "nothing to repeat at position 0"),
        (hub(projects={"include": [""]}),
         "subscriptions[0].projects.include[0]: string should have at least 1 character"),
        (hub(projects={"includes": ["x"]}),
         "subscriptions[0].projects.includes: unknown field (did you mean 'include'?)"),
        (hub(discover_every="0s"),
         "subscriptions[0].discover_every: must be greater than 0"),
        (hub(credential=DELETE, credentials=["main"]),
         "subscriptions[0].credentials: a hub subscription takes one credential (the user "
         "whose project list is read): use credential"),
        (patched({"subscriptions.0.projects": {"include": ["x"]}}),
         "subscriptions[0].projects: only for a hub subscription (hub_id)"),
        (patched({"subscriptions.0.discover_every": "1h"}),
         "subscriptions[0].discover_every: only for a hub subscription (hub_id)"),
    ],
)
def test_hub_problems(data: dict[str, Any], problem: str) -> None:
    found = problems(data)
    assert problem in found, found
