"""Table tests of which hub projects a hub subscription watches, and of the list diff."""

from __future__ import annotations

import pytest

from notifier.core.projects import Project, ProjectRules, decide, diff, watched

GUID = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
RULES = ProjectRules.compile(["^Tower", "Hospital"], ["(?i)archive"])


@pytest.mark.parametrize(
    ("name", "rules", "included", "reason"),
    [
        ("Tower A", RULES, True, "included"),
        ("North Hospital", RULES, True, "included"),
        ("Old Tower", RULES, False, "matches no include pattern"),
        ("Tower A (ARCHIVE)", RULES, False, "excluded by '(?i)archive'"),
        ("Hospital archived", RULES, False, "excluded by '(?i)archive'"),
        ("anything", ProjectRules(), True, "included"),
        ("anything", ProjectRules.compile(None, ["^any"]), False, "excluded by '^any'"),
        ("Tower", ProjectRules.compile([]), False, "matches no include pattern"),
    ],
)
def test_decide_by_name(name, rules, included, reason):
    verdict = decide(Project(f"b.{GUID}", name), rules)
    assert (verdict.included, verdict.reason) == (included, reason)


@pytest.mark.parametrize(
    ("project_id", "container_id"),
    [
        (f"b.{GUID}", GUID),
        (f"B.{GUID.upper()}", GUID),
        (GUID, None),
        ("a.YnVzaW5lc3M6YXV0b2Rlc2s3MzIx", None),
        ("b.not-a-guid", None),
    ],
)
def test_container_id_is_the_guid_without_prefix(project_id, container_id):
    project = Project(project_id, "Tower")
    assert project.container_id == container_id
    assert decide(project, ProjectRules()).included is (container_id is not None)


def test_watched_keys_by_container_and_ignores_repeats():
    other = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
    found = watched([Project(f"b.{GUID}", "Tower A"), Project(f"b.{GUID}", "Tower A copy"),
                     Project(f"b.{other}", "Archive Tower"), Project("a.x", "Tower X")], RULES)
    assert found == {GUID: Project(f"b.{GUID}", "Tower A")}


def test_diff_added_retired_renamed():
    a, b, c = (f"{i}" * 8 for i in "abc")
    before = {a: Project("b." + a, "A"), b: Project("b." + b, "B")}
    after = {b: Project("b." + b, "B2"), c: Project("b." + c, "C")}
    changes = diff(before, after)
    assert changes.added == [Project("b." + c, "C")]
    assert changes.retired == [a]
    assert changes.renamed == [Project("b." + b, "B2")]
    assert not diff(after, dict(after))
